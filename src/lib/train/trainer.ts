// The training loop: dataset shards in, a run directory out (model, labels, preprocessing spec,
// metrics log, checkpoints). Deterministic for a seed, resumable from its last checkpoint.
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {MlConfig} from '../config/schema.js'
import {describePreprocessing} from '../data/image.js'
import {readManifest} from '../data/store.js'
import {checkCompatible} from '../data/store/manifest.js'
import {joinPath, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
import {BestWeights} from './best.js'
import {resolveClassWeights} from './class-weights.js'
import {hasCheckpoint, type TrainingPosition} from './checkpoint.js'
import {LocalExecutor, type Executor} from './executor.js'
import {stepsPerEpoch} from './pipeline.js'
import {interruptedError, yieldToEventLoop} from './stop.js'
import {permutation, rngFor} from './rng.js'
import {phaseAt, totalEpochs, type TrainingPhase} from './replica.js'
import {createRunDir, markLatest, newRunId, readRunInfo, resolveRunDir, RUN_FILES, writeEpochMetrics, writeRunInfo, type EpochMetrics, type RunInfo} from '../model/run-dir.js'

export interface TrainOptions {
  loaded: LoadedConfig
  /** Continue a run from its last checkpoint: true = the latest run, or a run id / directory. */
  resume?: boolean | string
  runId?: string
  signal?: AbortSignal
  onEvent?: (event: TrainEvent) => void
}

export type TrainEvent =
  | {
      type: 'start'
      runId: string
      runDir: string
      backend: string
      notes: string[]
      params: number
      trainCount: number
      validationCount: number
      epochs: number
      startEpoch: number
      steps: number
      resumed: boolean
      workers: number
    }
  | {type: 'step'; epoch: number; step: number; steps: number; loss: number; accuracy: number; imagesPerSec: number}
  | {type: 'epoch'; metrics: EpochMetrics; epochs: number}
  | {type: 'early-stop'; epoch: number; patience: number}
  /** The fine-tune phase began: these base layers now train. */
  | {type: 'phase'; phase: TrainingPhase; epoch: number; unfrozen: string[]}

export interface TrainSummary {
  runId: string
  backend: string
  workers: number
  epochs: number
  loss: number
  accuracy: number
  valLoss?: number
  valAccuracy?: number
  imagesPerSec: number
  runDir: string
  stoppedEarly: boolean
  /** The epoch whose weights the model holds (an earlier one with train.earlyStopping.restoreBest). */
  keptEpoch: number
}

function assertFinite(loss: number, epoch: number, step: number): void {
  if (!Number.isFinite(loss)) {
    throw new UserError(`training diverged: loss is ${loss} at epoch ${epoch + 1}, step ${step + 1}`, {
      code: 'TRAINING_DIVERGED',
      exit: 'training',
      suggestions: ['Lower train.learningRate, or check the dataset for broken labels.'],
    })
  }
}

interface Prepared {
  config: MlConfig
  store: string
  runsDir: string
  manifest: Awaited<ReturnType<typeof readManifest>>
}

/** The config with its base source resolved like every other path (relative to the config file). */
function withResolvedBase(loaded: LoadedConfig): MlConfig {
  const {config} = loaded
  const base = config.model.base
  if (!base || /^https?:\/\//i.test(base.source)) return config
  return {...config, model: {...config.model, base: {...base, source: resolvePath(loaded, base.source)}}}
}

async function prepare(loaded: LoadedConfig): Promise<Prepared> {
  const config = withResolvedBase(loaded)
  const store = resolvePath(loaded, config.data.store)
  const runsDir = resolvePath(loaded, config.train.runs)
  const manifest = await readManifest(store)
  // The same check as ingest's: images of another size, or split by another rule, than the config says.
  checkCompatible(manifest, store, config.data.image, config.data.split)
  if (manifest.classes.length < 2) {
    throw new UserError(`the dataset in ${store} has ${manifest.classes.length} class(es); a classifier needs at least 2`, {
      code: 'DATASET_TOO_SMALL',
      exit: 'data',
      suggestions: ['Add class sub-folders to your sources and run `ml ingest` again.'],
    })
  }
  const trainCount = Object.values(manifest.counts.train ?? {}).reduce((a, b) => a + b, 0)
  if (trainCount === 0) {
    throw new UserError(`the train split of ${store} is empty`, {code: 'DATASET_TOO_SMALL', exit: 'data', suggestions: ['Run `ml ingest` with more images.']})
  }
  return {config, store, runsDir, manifest}
}

/** train.classWeights by class index (names resolved against the dataset's classes) for the replicas. */
function withClassWeightsByIndex(config: MlConfig, manifest: Prepared['manifest']): MlConfig {
  const setting = config.train.classWeights
  if (setting === undefined || setting === 'auto' || Array.isArray(setting)) return config
  const counts = manifest.classes.map((c) => manifest.counts.train?.[c] ?? 0)
  return {...config, train: {...config.train, classWeights: resolveClassWeights(setting, manifest.classes, counts)}}
}

/** Workers for train.devices: a number, or auto (one per GPU under tfjs-node-gpu, else one per core). */
export async function resolveDevices(devices: MlConfig['train']['devices']): Promise<number> {
  if (devices !== 'auto') return devices
  const {availableParallelism} = await import('node:os')
  const {countGpus} = await import('./parallel/devices.js')
  const gpus = await countGpus()
  return gpus > 0 ? gpus : availableParallelism()
}

/** Where a run lives: a new run directory, or the one being resumed. */
interface OpenedRun {
  runDir: string
  runId: string
  createdAt: string
  /** Set when resuming from a checkpoint. */
  checkpointsDir?: string
}

async function openRun(prepared: Prepared, options: TrainOptions): Promise<OpenedRun> {
  const {config, manifest, runsDir, store} = prepared
  if (options.resume) {
    const runDir = await resolveRunDir(runsDir, typeof options.resume === 'string' ? options.resume : undefined)
    const previous = await readRunInfo(runDir)
    if (previous.dataset.fingerprint !== manifest.fingerprint) {
      throw new UserError(`run ${previous.runId} was trained on another version of the dataset (v${previous.dataset.version}); it cannot be resumed on v${manifest.version}`, {
        code: 'RESUME_DATASET_CHANGED',
        exit: 'usage',
        suggestions: ['Start a new run (drop --resume).'],
      })
    }
    const checkpoints = joinPath(runDir, RUN_FILES.checkpoints)
    return {runDir, runId: previous.runId, createdAt: previous.createdAt, checkpointsDir: (await hasCheckpoint(checkpoints)) ? checkpoints : undefined}
  }
  const runId = options.runId ?? newRunId(config.name)
  const runDir = await createRunDir(runsDir, runId)
  await writeFileAtomic(joinPath(runDir, RUN_FILES.config), JSON.stringify({...config, data: {...config.data, store}}, null, 2) + '\n')
  await writeFileAtomic(joinPath(runDir, RUN_FILES.labels), JSON.stringify(manifest.classes) + '\n')
  await writeFileAtomic(joinPath(runDir, RUN_FILES.preprocessing), JSON.stringify(describePreprocessing(manifest.image), null, 2) + '\n')
  return {runDir, runId, createdAt: new Date().toISOString()}
}

/** train.fineTune needs a base to unfreeze: refused up front, before any run directory is written. */
function checkPhases(config: MlConfig): void {
  if (config.train.fineTune && !config.model.base) {
    throw new UserError('train.fineTune needs model.base (a pretrained network to unfreeze)', {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      suggestions: ['Add model.base, or remove train.fineTune.'],
    })
  }
}

async function startExecutor(prepared: Prepared, checkpointsDir: string | undefined, signal: AbortSignal | undefined): Promise<Executor> {
  const {config, store, manifest} = prepared
  const workers = await resolveDevices(config.train.devices)
  const start = {config: withClassWeightsByIndex(config, manifest), store, manifest, checkpointsDir}
  if (workers > 1) return (await import('./parallel/coordinator.js')).ParallelExecutor.start({...start, workers, signal})
  return LocalExecutor.start(start)
}

const FRESH: TrainingPosition = {epoch: 0, stepInEpoch: 0, globalStep: 0, rng: {}, history: [], epochsWithoutImprovement: 0}

/** What the epoch loop needs at hand. */
interface Loop {
  config: MlConfig
  executor: Executor
  run: OpenedRun
  info: RunInfo
  epochs: number
  steps: number
  trainCount: number
  checkpoints: string
  signal?: AbortSignal
  onEvent?: (event: TrainEvent) => void
  /** Keeps the best epoch's weights with train.earlyStopping.restoreBest. */
  bestWeights: BestWeights
}

type Partial = NonNullable<TrainingPosition['partial']>

/** Saves a checkpoint mid-epoch and stops with exit 130 (Ctrl-C, SIGTERM). */
async function interrupt(loop: Loop, position: TrainingPosition, step: number, partial: Partial, started: number): Promise<never> {
  const at = {...position, stepInEpoch: step, partial: {...partial, seconds: (performance.now() - started) / 1000}}
  await loop.executor.checkpoint(loop.checkpoints, at)
  throw interruptedError(loop.run.runId, position.epoch, step)
}

/** The steps of one epoch, from where `position` stands; returns the epoch's metrics (no validation yet). */
async function runEpoch(loop: Loop, position: TrainingPosition): Promise<EpochMetrics> {
  const {config, executor, steps, trainCount, onEvent} = loop
  const {batchSize, seed} = config.train
  const epoch = position.epoch
  const order = permutation(trainCount, rngFor(seed, 'shuffle', epoch))
  const partial: Partial = position.partial ?? {lossSum: 0, correct: 0, seen: 0, seconds: 0}
  const started = performance.now() - partial.seconds * 1000
  for (let step = position.stepInEpoch; step < steps; step++) {
    // Yield once per step, so that a Ctrl-C or SIGTERM handler runs at all (see stop.ts).
    await yieldToEventLoop()
    if (loop.signal?.aborted) await interrupt(loop, position, step, partial, started)
    const size = Math.min(batchSize, trainCount - step * batchSize)
    const result = await executor.step(epoch, step, order, step * batchSize, size)
    assertFinite(result.lossSum, epoch, step)
    partial.lossSum += result.lossSum
    partial.correct += result.correct
    partial.seen += result.count
    position.globalStep++
    const seconds = (performance.now() - started) / 1000
    onEvent?.({type: 'step', epoch, step, steps, loss: partial.lossSum / partial.seen, accuracy: partial.correct / partial.seen, imagesPerSec: partial.seen / Math.max(seconds, 1e-6)})
  }
  await executor.endEpoch(epoch)
  const seconds = (performance.now() - started) / 1000
  return {
    epoch: epoch + 1,
    loss: partial.lossSum / partial.seen,
    accuracy: partial.correct / partial.seen,
    imagesPerSec: partial.seen / Math.max(seconds, 1e-6),
    seconds,
    at: new Date().toISOString(),
  }
}

/** Early-stopping bookkeeping after an epoch: the best value so far and whether to stop. */
function earlyStopping(config: MlConfig, position: TrainingPosition, metrics: EpochMetrics): {best?: TrainingPosition['best']; epochsWithoutImprovement: number; stop: boolean} {
  const stopping = config.train.earlyStopping
  let {best, epochsWithoutImprovement} = position
  if (!stopping || metrics.valLoss === undefined) return {best, epochsWithoutImprovement, stop: false}
  const value = stopping.monitor === 'valLoss' ? metrics.valLoss : -(metrics.valAccuracy ?? 0)
  if (!best || value < best.value) {
    best = {epoch: metrics.epoch, value}
    epochsWithoutImprovement = 0
  } else {
    epochsWithoutImprovement++
  }
  return {best, epochsWithoutImprovement, stop: epochsWithoutImprovement >= stopping.patience}
}

/** Validates, records and checkpoints a finished epoch; returns the new position and whether to stop. */
async function finishEpoch(loop: Loop, position: TrainingPosition, metrics: EpochMetrics): Promise<{position: TrainingPosition; stop: boolean}> {
  const val = await loop.executor.validate()
  if (val) {
    metrics.valLoss = val.loss
    metrics.valAccuracy = val.accuracy
  }
  const history = [...position.history, metrics]
  const {best, epochsWithoutImprovement, stop} = earlyStopping(loop.config, position, metrics)
  if (best && best.epoch === metrics.epoch) await loop.bestWeights.improved(loop.executor)
  const next: TrainingPosition = {epoch: metrics.epoch, stepInEpoch: 0, globalStep: position.globalStep, rng: {}, history, best, epochsWithoutImprovement}
  await writeEpochMetrics(loop.run.runDir, history)
  await loop.executor.checkpoint(loop.checkpoints, next)
  loop.info.epochsCompleted = next.epoch
  loop.info.updatedAt = new Date().toISOString()
  await writeRunInfo(loop.run.runDir, loop.info)
  loop.onEvent?.({type: 'epoch', metrics, epochs: loop.epochs})
  if (stop) loop.onEvent?.({type: 'early-stop', epoch: metrics.epoch, patience: loop.config.train.earlyStopping!.patience})
  return {position: next, stop}
}

/** Every epoch from `position` to the end (or an early stop); returns the final position. */
async function runEpochs(loop: Loop, start: TrainingPosition): Promise<{position: TrainingPosition; stoppedEarly: boolean}> {
  let position = start
  while (position.epoch < loop.epochs) {
    const phase = phaseAt(loop.config, position.epoch)
    const unfrozen = await loop.executor.startPhase(phase)
    if (unfrozen.length) loop.onEvent?.({type: 'phase', phase, epoch: position.epoch, unfrozen})
    const metrics = await runEpoch(loop, position)
    const finished = await finishEpoch(loop, position, metrics)
    position = finished.position
    if (finished.stop) return {position, stoppedEarly: true}
  }
  return {position, stoppedEarly: false}
}

function summarise(loop: Loop, position: TrainingPosition, stoppedEarly: boolean): TrainSummary {
  const last = position.history.find((m) => m.epoch === loop.info.kept?.epoch) ?? position.history.at(-1)
  const totalSeconds = position.history.reduce((a, m) => a + m.seconds, 0)
  const totalImages = position.history.length * loop.trainCount
  return {
    runId: loop.run.runId,
    backend: loop.executor.backend,
    workers: loop.executor.workers,
    epochs: position.epoch,
    loss: last?.loss ?? Number.NaN,
    accuracy: last?.accuracy ?? Number.NaN,
    ...(last?.valLoss === undefined ? {} : {valLoss: last.valLoss, valAccuracy: last.valAccuracy}),
    imagesPerSec: totalSeconds > 0 ? totalImages / totalSeconds : 0,
    runDir: loop.run.runDir,
    stoppedEarly,
    keptEpoch: loop.info.kept?.epoch ?? position.epoch,
  }
}

async function markFailed(runDir: string, info: RunInfo, error: unknown): Promise<void> {
  info.status = (error as UserError).code === 'INTERRUPTED' ? 'interrupted' : 'failed'
  info.error = (error as Error).message
  info.updatedAt = new Date().toISOString()
  await writeRunInfo(runDir, info)
}

async function markCompleted(runDir: string, info: RunInfo, position: TrainingPosition, summary: TrainSummary): Promise<void> {
  const last = position.history.find((m) => m.epoch === info.kept?.epoch) ?? position.history.at(-1)
  info.status = 'completed'
  info.epochsCompleted = position.epoch
  info.updatedAt = new Date().toISOString()
  if (last) info.final = {epoch: last.epoch, loss: last.loss, accuracy: last.accuracy, valLoss: last.valLoss, valAccuracy: last.valAccuracy, imagesPerSec: summary.imagesPerSec}
  await writeRunInfo(runDir, info)
}

/** Trains a model as configured (or continues one) and returns the run's summary. */
export async function runTraining(options: TrainOptions): Promise<TrainSummary> {
  const prepared = await prepare(options.loaded)
  const {config, manifest, runsDir, store} = prepared
  checkPhases(config)
  // Checked before a run directory is made: a class name the dataset lacks is a config error.
  withClassWeightsByIndex(config, manifest)
  const run = await openRun(prepared, options)
  const executor = await startExecutor(prepared, run.checkpointsDir, options.signal)
  const position = executor.restored ?? {...FRESH, history: []}
  const epochs = totalEpochs(config)
  const info: RunInfo = {
    runId: run.runId,
    name: config.name,
    createdAt: run.createdAt,
    updatedAt: new Date().toISOString(),
    status: 'running',
    backend: executor.backend,
    workers: executor.workers,
    seed: config.train.seed,
    epochs,
    epochsCompleted: position.epoch,
    params: executor.params,
    dataset: {store, version: manifest.version, fingerprint: manifest.fingerprint, classes: manifest.classes, counts: manifest.counts},
  }
  await writeRunInfo(run.runDir, info)
  await markLatest(runsDir, run.runId)
  const trainCount = executor.trainCount
  const loop: Loop = {
    config,
    executor,
    run,
    info,
    epochs,
    steps: stepsPerEpoch(trainCount, config.train.batchSize),
    trainCount,
    checkpoints: joinPath(run.runDir, RUN_FILES.checkpoints),
    signal: options.signal,
    onEvent: options.onEvent,
    bestWeights: new BestWeights(run.runDir, config.train.earlyStopping?.restoreBest ? config.train.earlyStopping.monitor : undefined),
  }
  options.onEvent?.({
    type: 'start',
    runId: run.runId,
    runDir: run.runDir,
    backend: executor.backend,
    notes: executor.notes,
    params: info.params,
    trainCount,
    validationCount: executor.validationCount,
    epochs,
    startEpoch: position.epoch,
    steps: loop.steps,
    resumed: Boolean(options.resume),
    workers: executor.workers,
  })
  let result: {position: TrainingPosition; stoppedEarly: boolean}
  try {
    result = await runEpochs(loop, position)
    // A stop asked for after the last step: the epoch's checkpoint is written; the run is not completed.
    if (options.signal?.aborted) throw interruptedError(run.runId, result.position.epoch - 1, loop.steps - 1)
    await executor.saveModel(joinPath(run.runDir, RUN_FILES.model))
    info.kept = await loop.bestWeights.finish(result.position.epoch, result.position.best)
  } catch (error) {
    await markFailed(run.runDir, info, error)
    throw error
  } finally {
    await executor.close()
  }
  const summary = summarise(loop, result.position, result.stoppedEarly)
  await markCompleted(run.runDir, info, result.position, summary)
  return summary
}
