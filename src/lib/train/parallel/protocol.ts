// Messages between the training coordinator and its worker processes (Node IPC with the
// structured-clone serialisation, so Float32Arrays travel without JSON).
import type {MlConfig} from '../../config/schema.js'
import type {DatasetManifest} from '../../data/types.js'
import type {TrainingPosition} from '../checkpoint.js'
import type {TrainingPhase} from '../replica.js'

export interface InitArgs {
  config: MlConfig
  store: string
  manifest: DatasetManifest
  checkpointsDir?: string
  index: number
  workers: number
}

export interface ReadyInfo {
  backend: string
  notes: string[]
  params: number
  trainCount: number
  validationCount: number
  restored?: TrainingPosition
}

export interface StepArgs {
  epoch: number
  step: number
  /** This worker's slice of the global batch: order[start, start+size). */
  start: number
  size: number
  rowOffset: number
  globalBatch: number
  /**
   * The all-reduced gradients of the previous step, applied before this one's are computed: the
   * update travels with the next request instead of costing a round trip of its own.
   */
  update?: Float32Array
}

export type Request =
  | {id: number; method: 'init'; args: InitArgs}
  | {id: number; method: 'step'; args: StepArgs}
  | {id: number; method: 'apply'; args: {flat: Float32Array}}
  | {id: number; method: 'nonTrainable'}
  | {id: number; method: 'setNonTrainable'; args: {flat: Float32Array}}
  | {id: number; method: 'checksum'}
  | {id: number; method: 'validate'}
  | {id: number; method: 'phase'; args: {phase: TrainingPhase}}
  | {id: number; method: 'checkpoint'; args: {dir: string; position: TrainingPosition}}
  | {id: number; method: 'save'; args: {dir: string}}
  | {id: number; method: 'close'}

export type Reply =
  | {id: number; ok: true; value: unknown}
  | {id: number; ok: false; error: {message: string; code?: string; exitCode?: number; suggestions?: string[]}}
