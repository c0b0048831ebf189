// The training loop: dataset shards in, a run directory out (model, labels, preprocessing spec,
// metrics log, checkpoints). Deterministic for a seed, resumable from its last checkpoint.
import * as tf from '@tensorflow/tfjs'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {MlConfig, TrainConfig} from '../config/schema.js'
import {describePreprocessing} from '../data/image.js'
import {loadSplit, readManifest} from '../data/store.js'
import type {DecodedSplit} from '../data/types.js'
import {initEngine} from '../engine/backend.js'
import {joinPath, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../ui/errors.js'
import {hasCheckpoint, loadLatestCheckpoint, saveCheckpoint, type TrainingPosition} from './checkpoint.js'
import {predictSplit} from './evaluate.js'
import {buildModel, saveModel} from './model.js'
import {disposeBatch, makeBatch, stepsPerEpoch, type Batch} from './pipeline.js'
import {permutation, rngFor, withSeededRandom, type StatefulRng} from './rng.js'
import {
  createRunDir,
  markLatest,
  newRunId,
  readRunInfo,
  resolveRunDir,
  RUN_FILES,
  writeEpochMetrics,
  writeRunInfo,
  type EpochMetrics,
  type RunInfo,
} from './run-dir.js'

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
    }
  | {type: 'step'; epoch: number; step: number; steps: number; loss: number; accuracy: number; imagesPerSec: number}
  | {type: 'epoch'; metrics: EpochMetrics; epochs: number}
  | {type: 'early-stop'; epoch: number; patience: number}

export interface TrainSummary {
  runId: string
  backend: string
  epochs: number
  loss: number
  accuracy: number
  valLoss?: number
  valAccuracy?: number
  imagesPerSec: number
  runDir: string
  stoppedEarly: boolean
}

export function makeOptimizer(train: TrainConfig): tf.Optimizer {
  const lr = train.learningRate
  switch (train.optimizer) {
    case 'adam':
      return tf.train.adam(lr)
    case 'sgd':
      return tf.train.sgd(lr)
    case 'momentum':
      return tf.train.momentum(lr, 0.9)
    case 'rmsprop':
      return tf.train.rmsprop(lr)
    case 'adagrad':
      return tf.train.adagrad(lr)
  }
}

/** Trainable variables in a fixed order: optimizer state is matched to variables by position. */
export function trainableVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => w.read() as tf.Variable)
}

export interface StepResult {
  loss: number
  correct: number
}

/**
 * Computes the loss and gradients of one batch (dropout masks drawn from `dropoutRng`). The caller
 * owns the returned gradient tensors.
 */
export function computeGradients(
  model: tf.LayersModel,
  variables: tf.Variable[],
  batch: Batch,
  dropoutRng: StatefulRng,
): {loss: tf.Scalar; correct: tf.Scalar; grads: tf.NamedTensorMap} {
  let correct: tf.Scalar | undefined
  const {value, grads} = withSeededRandom(dropoutRng, () =>
    tf.variableGrads(() => {
      const probs = model.apply(batch.xs, {training: true}) as tf.Tensor2D
      correct = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(probs, 1), tf.argMax(batch.ys, 1)), 'float32')) as tf.Scalar)
      return tf.mean(tf.metrics.categoricalCrossentropy(batch.ys, probs)) as tf.Scalar
    }, variables),
  )
  return {loss: value, correct: correct!, grads}
}

/** One optimisation step on one process. */
export async function trainStep(
  model: tf.LayersModel,
  optimizer: tf.Optimizer,
  variables: tf.Variable[],
  batch: Batch,
  dropoutRng: StatefulRng,
): Promise<StepResult> {
  const {loss, correct, grads} = computeGradients(model, variables, batch, dropoutRng)
  optimizer.applyGradients(variables.map((v) => ({name: v.name, tensor: grads[v.name]!})))
  const [lossValue, correctValue] = await Promise.all([loss.data(), correct.data()])
  tf.dispose([loss, correct, grads])
  return {loss: lossValue[0]!, correct: correctValue[0]!}
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
  train: DecodedSplit
  validation: DecodedSplit
}

async function prepare(loaded: LoadedConfig): Promise<Prepared> {
  const {config} = loaded
  const store = resolvePath(loaded, config.data.store)
  const runsDir = resolvePath(loaded, config.train.runs)
  const manifest = await readManifest(store)
  if (manifest.classes.length < 2) {
    throw new UserError(`the dataset in ${store} has ${manifest.classes.length} class(es); a classifier needs at least 2`, {
      code: 'DATASET_TOO_SMALL',
      exit: 'data',
      suggestions: ['Add class sub-folders to your sources and run `ml ingest` again.'],
    })
  }
  const train = await loadSplit(store, 'train', manifest)
  if (train.count === 0) {
    throw new UserError(`the train split of ${store} is empty`, {code: 'DATASET_TOO_SMALL', exit: 'data', suggestions: ['Run `ml ingest` with more images.']})
  }
  const validation = await loadSplit(store, 'validation', manifest)
  return {config, store, runsDir, manifest, train, validation}
}

/** Trains a model as configured (or continues one) and returns the run's summary. */
export async function runTraining(options: TrainOptions): Promise<TrainSummary> {
  const {loaded, signal, onEvent} = options
  const prepared = await prepare(loaded)
  const {config, manifest, train, validation, runsDir, store} = prepared
  const engine = await initEngine(config.train.backend)
  const numClasses = manifest.classes.length
  const {epochs, batchSize, seed} = config.train

  let runDir: string
  let runId: string
  let model: tf.LayersModel
  const optimizer = makeOptimizer(config.train)
  let position: TrainingPosition
  let createdAt = new Date().toISOString()

  if (options.resume) {
    runDir = await resolveRunDir(runsDir, typeof options.resume === 'string' ? options.resume : undefined)
    const info = await readRunInfo(runDir)
    runId = info.runId
    createdAt = info.createdAt
    if (info.dataset.fingerprint !== manifest.fingerprint) {
      throw new UserError(`run ${runId} was trained on another version of the dataset (v${info.dataset.version}); it cannot be resumed on v${manifest.version}`, {
        code: 'RESUME_DATASET_CHANGED',
        exit: 'usage',
        suggestions: ['Start a new run (drop --resume).'],
      })
    }
    const checkpoints = joinPath(runDir, RUN_FILES.checkpoints)
    if (await hasCheckpoint(checkpoints)) {
      const checkpoint = await loadLatestCheckpoint(checkpoints)
      model = checkpoint.model
      await optimizer.setWeights(checkpoint.optimizerWeights)
      tf.dispose(checkpoint.optimizerWeights.map((w) => w.tensor))
      position = checkpoint.position
    } else {
      model = buildModel(config.model, manifest.image, numClasses, seed)
      position = {epoch: 0, stepInEpoch: 0, globalStep: 0, rng: {}, history: [], epochsWithoutImprovement: 0}
    }
  } else {
    runId = options.runId ?? newRunId(config.name)
    runDir = await createRunDir(runsDir, runId)
    model = buildModel(config.model, manifest.image, numClasses, seed)
    position = {epoch: 0, stepInEpoch: 0, globalStep: 0, rng: {}, history: [], epochsWithoutImprovement: 0}
    await writeFileAtomic(joinPath(runDir, RUN_FILES.config), JSON.stringify({...config, data: {...config.data, store}}, null, 2) + '\n')
    await writeFileAtomic(joinPath(runDir, RUN_FILES.labels), JSON.stringify(manifest.classes) + '\n')
    await writeFileAtomic(joinPath(runDir, RUN_FILES.preprocessing), JSON.stringify(describePreprocessing(manifest.image), null, 2) + '\n')
  }

  const info: RunInfo = {
    runId,
    name: config.name,
    createdAt,
    updatedAt: new Date().toISOString(),
    status: 'running',
    backend: engine.backend,
    workers: 1,
    seed,
    epochs,
    epochsCompleted: position.epoch,
    params: model.countParams(),
    dataset: {store, version: manifest.version, fingerprint: manifest.fingerprint, classes: manifest.classes, counts: manifest.counts},
  }
  await writeRunInfo(runDir, info)
  await markLatest(runsDir, runId)

  const steps = stepsPerEpoch(train.count, batchSize)
  onEvent?.({
    type: 'start',
    runId,
    runDir,
    backend: engine.backend,
    notes: engine.notes,
    params: info.params,
    trainCount: train.count,
    validationCount: validation.count,
    epochs,
    startEpoch: position.epoch,
    steps,
    resumed: Boolean(options.resume),
  })

  const variables = trainableVariables(model)
  const checkpointsDir = joinPath(runDir, RUN_FILES.checkpoints)
  let stoppedEarly = false
  const stopping = config.train.earlyStopping

  try {
    while (position.epoch < epochs && !stoppedEarly) {
      const epoch = position.epoch
      const order = permutation(train.count, rngFor(seed, 'shuffle', epoch))
      const dropoutRng = rngFor(seed, 'dropout', epoch, position.rng.dropout)
      const augmentRng = rngFor(seed, 'augment', epoch, position.rng.augment)
      const partial = position.partial ?? {lossSum: 0, correct: 0, seen: 0, seconds: 0}
      const started = performance.now() - partial.seconds * 1000
      for (let step = position.stepInEpoch; step < steps; step++) {
        if (signal?.aborted) {
          position = {
            ...position,
            stepInEpoch: step,
            rng: {dropout: dropoutRng.state(), augment: augmentRng.state()},
            partial: {...partial, seconds: (performance.now() - started) / 1000},
          }
          await saveCheckpoint(checkpointsDir, model, optimizer, position)
          throw new UserError(`training interrupted at epoch ${epoch + 1}, step ${step + 1}; checkpoint saved`, {
            code: 'INTERRUPTED',
            exit: 'interrupted',
            suggestions: [`Continue with \`ml train --resume ${runId}\`.`],
          })
        }
        const batch = makeBatch(train, order, step * batchSize, batchSize, numClasses, {config: config.train.augment, rng: augmentRng})
        const result = await trainStep(model, optimizer, variables, batch, dropoutRng)
        disposeBatch(batch)
        assertFinite(result.loss, epoch, step)
        partial.lossSum += result.loss * batch.size
        partial.correct += result.correct
        partial.seen += batch.size
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
      const seconds = (performance.now() - started) / 1000
      const metrics: EpochMetrics = {
        epoch: epoch + 1,
        loss: partial.lossSum / partial.seen,
        accuracy: partial.correct / partial.seen,
        imagesPerSec: partial.seen / Math.max(seconds, 1e-6),
        seconds,
        at: new Date().toISOString(),
      }
      if (validation.count > 0) {
        const val = await predictSplit(model, validation, numClasses)
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
        } else {
          epochsWithoutImprovement++
        }
        if (epochsWithoutImprovement >= stopping.patience) stoppedEarly = true
      }
      position = {epoch: epoch + 1, stepInEpoch: 0, globalStep: position.globalStep, rng: {}, history, best, epochsWithoutImprovement}
      await writeEpochMetrics(runDir, history)
      await saveCheckpoint(checkpointsDir, model, optimizer, position)
      info.epochsCompleted = position.epoch
      info.updatedAt = new Date().toISOString()
      await writeRunInfo(runDir, info)
      onEvent?.({type: 'epoch', metrics, epochs})
      if (stoppedEarly) onEvent?.({type: 'early-stop', epoch: epoch + 1, patience: stopping!.patience})
    }
  } catch (error) {
    info.status = (error as UserError).code === 'INTERRUPTED' ? 'interrupted' : 'failed'
    info.error = (error as Error).message
    info.updatedAt = new Date().toISOString()
    await writeRunInfo(runDir, info)
    throw error
  }

  await saveModel(model, joinPath(runDir, RUN_FILES.model))
  const last = position.history.at(-1)
  const totalSeconds = position.history.reduce((a, m) => a + m.seconds, 0)
  const totalImages = position.history.length * train.count
  const summary: TrainSummary = {
    runId,
    backend: engine.backend,
    epochs: position.epoch,
    loss: last?.loss ?? Number.NaN,
    accuracy: last?.accuracy ?? Number.NaN,
    ...(last?.valLoss === undefined ? {} : {valLoss: last.valLoss, valAccuracy: last.valAccuracy}),
    imagesPerSec: totalSeconds > 0 ? totalImages / totalSeconds : 0,
    runDir,
    stoppedEarly,
  }
  info.status = 'completed'
  info.epochsCompleted = position.epoch
  info.updatedAt = new Date().toISOString()
  if (last) info.final = {epoch: last.epoch, loss: last.loss, accuracy: last.accuracy, valLoss: last.valLoss, valAccuracy: last.valAccuracy, imagesPerSec: summary.imagesPerSec}
  await writeRunInfo(runDir, info)
  model.dispose()
  optimizer.dispose()
  return summary
}
