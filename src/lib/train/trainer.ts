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

async function prepare(loaded: LoadedConfig): Promise<Prepared> {
  const {config} = loaded
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

/** Trains a model as configured (or continues one) and returns the run's summary. */
export async function runTraining(options: TrainOptions): Promise<TrainSummary> {
  const {loaded, signal, onEvent} = options
  const {config, manifest, runsDir, store} = await prepare(loaded)
  // Checked before a run directory is made: a class name the dataset lacks is a config error.
  const replicaConfig = withClassWeightsByIndex(config, manifest)
  const {epochs, batchSize, seed} = config.train

  let runDir: string
  let runId: string
  let createdAt = new Date().toISOString()
  let checkpointsDir: string | undefined
  if (options.resume) {
    runDir = await resolveRunDir(runsDir, typeof options.resume === 'string' ? options.resume : undefined)
    const previous = await readRunInfo(runDir)
    runId = previous.runId
    createdAt = previous.createdAt
    if (previous.dataset.fingerprint !== manifest.fingerprint) {
      throw new UserError(`run ${runId} was trained on another version of the dataset (v${previous.dataset.version}); it cannot be resumed on v${manifest.version}`, {
        code: 'RESUME_DATASET_CHANGED',
        exit: 'usage',
        suggestions: ['Start a new run (drop --resume).'],
      })
    }
    if (await hasCheckpoint(joinPath(runDir, RUN_FILES.checkpoints))) checkpointsDir = joinPath(runDir, RUN_FILES.checkpoints)
  } else {
    runId = options.runId ?? newRunId(config.name)
    runDir = await createRunDir(runsDir, runId)
    await writeFileAtomic(joinPath(runDir, RUN_FILES.config), JSON.stringify({...config, data: {...config.data, store}}, null, 2) + '\n')
    await writeFileAtomic(joinPath(runDir, RUN_FILES.labels), JSON.stringify(manifest.classes) + '\n')
    await writeFileAtomic(joinPath(runDir, RUN_FILES.preprocessing), JSON.stringify(describePreprocessing(manifest.image), null, 2) + '\n')
  }

  const workers = await resolveDevices(config.train.devices)
  const start = {config: replicaConfig, store, manifest, checkpointsDir}
  const executor: Executor =
    workers > 1 ? await (await import('./parallel/coordinator.js')).ParallelExecutor.start({...start, workers, signal}) : await LocalExecutor.start(start)

  let position: TrainingPosition = executor.restored ?? {epoch: 0, stepInEpoch: 0, globalStep: 0, rng: {}, history: [], epochsWithoutImprovement: 0}
  const info: RunInfo = {
    runId,
    name: config.name,
    createdAt,
    updatedAt: new Date().toISOString(),
    status: 'running',
    backend: executor.backend,
    workers: executor.workers,
    seed,
    epochs,
    epochsCompleted: position.epoch,
    params: executor.params,
    dataset: {store, version: manifest.version, fingerprint: manifest.fingerprint, classes: manifest.classes, counts: manifest.counts},
  }
  await writeRunInfo(runDir, info)
  await markLatest(runsDir, runId)

  const trainCount = executor.trainCount
  const steps = stepsPerEpoch(trainCount, batchSize)
  onEvent?.({
    type: 'start',
    runId,
    runDir,
    backend: executor.backend,
    notes: executor.notes,
    params: info.params,
    trainCount,
    validationCount: executor.validationCount,
    epochs,
    startEpoch: position.epoch,
    steps,
    resumed: Boolean(options.resume),
    workers: executor.workers,
  })

  const checkpoints = joinPath(runDir, RUN_FILES.checkpoints)
  let stoppedEarly = false
  const stopping = config.train.earlyStopping
  const bestWeights = new BestWeights(runDir, stopping?.restoreBest ? stopping.monitor : undefined)

  try {
    while (position.epoch < epochs && !stoppedEarly) {
      const epoch = position.epoch
      const order = permutation(trainCount, rngFor(seed, 'shuffle', epoch))
      const partial = position.partial ?? {lossSum: 0, correct: 0, seen: 0, seconds: 0}
      const started = performance.now() - partial.seconds * 1000
      for (let step = position.stepInEpoch; step < steps; step++) {
        await yieldToEventLoop()
        if (signal?.aborted) {
          position = {...position, stepInEpoch: step, partial: {...partial, seconds: (performance.now() - started) / 1000}}
          await executor.checkpoint(checkpoints, position)
          throw interruptedError(runId, epoch, step)
        }
        const size = Math.min(batchSize, trainCount - step * batchSize)
        const result = await executor.step(epoch, step, order, step * batchSize, size)
        assertFinite(result.lossSum, epoch, step)
        partial.lossSum += result.lossSum
        partial.correct += result.correct
        partial.seen += result.count
        position.globalStep++
        const seconds = (performance.now() - started) / 1000
        onEvent?.({
          type: 'step',
          epoch,
          step,
          steps,
          loss: partial.lossSum / partial.seen,
          accuracy: partial.correct / partial.seen,
          imagesPerSec: partial.seen / Math.max(seconds, 1e-6),
        })
      }
      await executor.endEpoch(epoch)
      const seconds = (performance.now() - started) / 1000
      const metrics: EpochMetrics = {
        epoch: epoch + 1,
        loss: partial.lossSum / partial.seen,
        accuracy: partial.correct / partial.seen,
        imagesPerSec: partial.seen / Math.max(seconds, 1e-6),
        seconds,
        at: new Date().toISOString(),
      }
      const val = await executor.validate()
      if (val) {
        metrics.valLoss = val.loss
        metrics.valAccuracy = val.accuracy
      }
      const history = [...position.history, metrics]
      let {best, epochsWithoutImprovement} = position
      if (stopping && metrics.valLoss !== undefined) {
        const value = stopping.monitor === 'valLoss' ? metrics.valLoss : -(metrics.valAccuracy ?? 0)
        if (!best || value < best.value) {
          best = {epoch: epoch + 1, value}
          epochsWithoutImprovement = 0
          await bestWeights.improved(executor)
        } else {
          epochsWithoutImprovement++
        }
        if (epochsWithoutImprovement >= stopping.patience) stoppedEarly = true
      }
      position = {epoch: epoch + 1, stepInEpoch: 0, globalStep: position.globalStep, rng: {}, history, best, epochsWithoutImprovement}
      await writeEpochMetrics(runDir, history)
      await executor.checkpoint(checkpoints, position)
      info.epochsCompleted = position.epoch
      info.updatedAt = new Date().toISOString()
      await writeRunInfo(runDir, info)
      onEvent?.({type: 'epoch', metrics, epochs})
      if (stoppedEarly) onEvent?.({type: 'early-stop', epoch: epoch + 1, patience: stopping!.patience})
    }
    // A stop asked for after the last step: the epoch's checkpoint is written; the run is not completed.
    if (signal?.aborted) throw interruptedError(runId, position.epoch - 1, steps - 1)
    await executor.saveModel(joinPath(runDir, RUN_FILES.model))
    info.kept = await bestWeights.finish(position.epoch, position.best)
  } catch (error) {
    info.status = (error as UserError).code === 'INTERRUPTED' ? 'interrupted' : 'failed'
    info.error = (error as Error).message
    info.updatedAt = new Date().toISOString()
    await writeRunInfo(runDir, info)
    throw error
  } finally {
    await executor.close()
  }

  const last = position.history.find((m) => m.epoch === info.kept?.epoch) ?? position.history.at(-1)
  const totalSeconds = position.history.reduce((a, m) => a + m.seconds, 0)
  const totalImages = position.history.length * trainCount
  const summary: TrainSummary = {
    runId,
    backend: executor.backend,
    workers: executor.workers,
    epochs: position.epoch,
    loss: last?.loss ?? Number.NaN,
    accuracy: last?.accuracy ?? Number.NaN,
    ...(last?.valLoss === undefined ? {} : {valLoss: last.valLoss, valAccuracy: last.valAccuracy}),
    imagesPerSec: totalSeconds > 0 ? totalImages / totalSeconds : 0,
    runDir,
    stoppedEarly,
    keptEpoch: info.kept?.epoch ?? position.epoch,
  }
  info.status = 'completed'
  info.epochsCompleted = position.epoch
  info.updatedAt = new Date().toISOString()
  if (last) info.final = {epoch: last.epoch, loss: last.loss, accuracy: last.accuracy, valLoss: last.valLoss, valAccuracy: last.valAccuracy, imagesPerSec: summary.imagesPerSec}
  await writeRunInfo(runDir, info)
  return summary
}
