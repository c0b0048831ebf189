// How training steps run: in this process (LocalExecutor) or across data-parallel worker processes
// (parallel/coordinator.ts). The epoch loop in trainer.ts drives either through this interface.
import type {MlConfig} from '../config/schema.js'
import {loadSplit} from '../data/store.js'
import type {DatasetManifest} from '../data/types.js'
import {initEngine} from '../engine/backend.js'
import type {TrainingPosition} from './checkpoint.js'
import {Replica, type SliceResult, type TrainingPhase, type ValidationResult} from './replica.js'

export interface ExecutorStart {
  config: MlConfig
  store: string
  manifest: DatasetManifest
  /** Restore from the latest checkpoint in this folder. */
  checkpointsDir?: string
}

export interface Executor {
  readonly backend: string
  readonly notes: string[]
  readonly workers: number
  readonly params: number
  readonly trainCount: number
  readonly validationCount: number
  /** The position restored from a checkpoint, if any. */
  readonly restored?: TrainingPosition
  /** Enters a training phase (no-op when already in it); returns the base layers it unfroze. */
  startPhase(phase: TrainingPhase): Promise<string[]>
  step(epoch: number, step: number, order: Uint32Array, start: number, size: number): Promise<SliceResult>
  /** Epoch boundary: workers reconcile batch-norm statistics and prove their weights are identical. */
  endEpoch(epoch: number): Promise<void>
  validate(): Promise<ValidationResult | undefined>
  checkpoint(checkpointsDir: string, position: TrainingPosition): Promise<void>
  saveModel(dir: string): Promise<void>
  close(): Promise<void>
}

export class LocalExecutor implements Executor {
  readonly workers = 1

  private constructor(
    private readonly replica: Replica,
    readonly backend: string,
    private readonly engineNotes: string[],
    readonly restored?: TrainingPosition,
  ) {}

  get notes(): string[] {
    return [...this.engineNotes, ...this.replica.notes]
  }

  startPhase(phase: TrainingPhase) {
    return this.replica.startPhase(phase)
  }

  static async start(options: ExecutorStart): Promise<LocalExecutor> {
    const engine = await initEngine(options.config.train.backend)
    const train = await loadSplit(options.store, 'train', options.manifest)
    const validation = await loadSplit(options.store, 'validation', options.manifest)
    const {replica, position} = await Replica.create(options.config, options.manifest.classes.length, train, validation, options.checkpointsDir, options.manifest.fingerprint)
    return new LocalExecutor(replica, engine.backend, engine.notes, position)
  }

  get params() {
    return this.replica.params
  }

  get trainCount() {
    return this.replica.train.count
  }

  get validationCount() {
    return this.replica.validation.count
  }

  step(epoch: number, step: number, order: Uint32Array, start: number, size: number) {
    return this.replica.step(epoch, step, order, start, size)
  }

  async endEpoch() {}

  validate() {
    return this.replica.validate()
  }

  checkpoint(checkpointsDir: string, position: TrainingPosition) {
    return this.replica.checkpoint(checkpointsDir, position)
  }

  saveModel(dir: string) {
    return this.replica.saveModel(dir)
  }

  async close() {
    this.replica.dispose()
  }
}
