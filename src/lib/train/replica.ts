// One model replica: its weights, optimizer and data. A single-process run has one; data-parallel
// training has one per worker, each computing gradients on its slice of every global batch.
import * as tf from '@tensorflow/tfjs'
import type {MlConfig} from '../config/schema.js'
import type {DecodedSplit} from '../data/types.js'
import {joinPath} from '../storage/index.js'
import {loadLatestCheckpoint, saveCheckpoint, type TrainingPosition} from './checkpoint.js'
import {withDropoutContext} from '../model/dropout.js'
import {predictSplit} from './evaluate.js'
import {buildModel} from '../model/build.js'
import {saveModel} from '../model/artifact.js'
import {disposeBatch, makeBatch} from './pipeline.js'
import {rngFor} from './rng.js'
import {countLabels, resolveClassWeights} from './class-weights.js'
import {learningRateFor, setLearningRate} from './schedule.js'

export interface SliceResult {
  /** Sum (not mean) of the per-example losses of the slice. */
  lossSum: number
  correct: number
  count: number
}

export interface ValidationResult {
  loss: number
  accuracy: number
}

export function makeOptimizer(train: MlConfig['train']): tf.Optimizer {
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

export class Replica {
  readonly variables: tf.Variable[]
  /** Loss weight per class (train.classWeights), undefined when unweighted. */
  private readonly classWeights?: number[]
  /** The scheduled learning rate of the step whose gradients applyFlatGradients applies next. */
  private pendingRate?: number

  private constructor(
    readonly config: MlConfig,
    readonly model: tf.LayersModel,
    readonly optimizer: tf.Optimizer,
    readonly numClasses: number,
    readonly train: DecodedSplit,
    readonly validation: DecodedSplit,
  ) {
    // Fixed order: optimizer state is matched to variables by position.
    this.variables = model.trainableWeights.map((w) => w.read() as tf.Variable)
    // By class index here: the trainer hands replicas classWeights already resolved from class names.
    const setting = config.train.classWeights
    this.classWeights = setting === undefined ? undefined : resolveClassWeights(setting, Array.from({length: numClasses}, (_, i) => String(i)), countLabels(train.labels, numClasses))
  }

  /** A fresh replica (seeded init), or one restored from the latest checkpoint in `checkpointsDir`. */
  static async create(
    config: MlConfig,
    numClasses: number,
    train: DecodedSplit,
    validation: DecodedSplit,
    checkpointsDir?: string,
  ): Promise<{replica: Replica; position?: TrainingPosition}> {
    const optimizer = makeOptimizer(config.train)
    if (checkpointsDir) {
      const checkpoint = await loadLatestCheckpoint(checkpointsDir)
      await optimizer.setWeights(checkpoint.optimizerWeights)
      tf.dispose(checkpoint.optimizerWeights.map((w) => w.tensor))
      return {replica: new Replica(config, checkpoint.model, optimizer, numClasses, train, validation), position: checkpoint.position}
    }
    const image = {height: train.height, width: train.width, channels: train.channels as 1 | 3, fit: config.data.image.fit}
    const model = buildModel(config.model, image, numClasses, config.train.seed)
    return {replica: new Replica(config, model, optimizer, numClasses, train, validation)}
  }

  get params(): number {
    return this.model.countParams()
  }

  /**
   * Loss and gradients of examples order[start, start+size) of global step `step`. Gradients are of
   * the mean loss over `globalBatch` examples, so slices from several workers simply add up.
   */
  private sliceGradients(epoch: number, step: number, order: Uint32Array, start: number, size: number, rowOffset: number, globalBatch: number) {
    const {seed} = this.config.train
    const batch = makeBatch(this.train, order, start, size, this.numClasses, {
      config: this.config.train.augment,
      rngFor: (row) => rngFor(seed, `augment:${step}:${row}`, epoch),
      rowOffset,
    })
    let correct: tf.Scalar | undefined
    let lossSum: tf.Scalar | undefined
    const {grads, value} = withDropoutContext({seed, epoch, step, rowOffset}, () =>
      tf.variableGrads(() => {
        const probs = this.model.apply(batch.xs, {training: true}) as tf.Tensor2D
        correct = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(probs, 1), tf.argMax(batch.ys, 1)), 'float32')) as tf.Scalar)
        const perExample = tf.metrics.categoricalCrossentropy(batch.ys, probs)
        lossSum = tf.keep(tf.sum(perExample) as tf.Scalar)
        // Class weights scale what is optimised; the reported loss stays comparable to validation's.
        const objective = this.classWeights ? tf.mul(perExample, tf.tensor1d(Array.from(batch.labels, (l) => this.classWeights![l]!))) : perExample
        return tf.div(tf.sum(objective), globalBatch) as tf.Scalar
      }, this.variables),
    )
    value.dispose()
    disposeBatch(batch)
    return {grads, correct: correct!, lossSum: lossSum!, count: batch.size}
  }

  private async readScalars(lossSum: tf.Scalar, correct: tf.Scalar, count: number): Promise<SliceResult> {
    const [l, c] = await Promise.all([lossSum.data(), correct.data()])
    tf.dispose([lossSum, correct])
    return {lossSum: l[0]!, correct: c[0]!, count}
  }

  /** Single-process step: gradients of the whole global batch, applied at once. */
  async step(epoch: number, step: number, order: Uint32Array, start: number, size: number): Promise<SliceResult> {
    const {grads, correct, lossSum, count} = this.sliceGradients(epoch, step, order, start, size, 0, size)
    setLearningRate(this.optimizer, learningRateFor(this.config.train, epoch, step, this.train.count))
    this.optimizer.applyGradients(this.variables.map((v) => ({name: v.name, tensor: grads[v.name]!})))
    tf.dispose(grads)
    return this.readScalars(lossSum, correct, count)
  }

  /** Data-parallel step, part 1: this worker's slice gradients, flattened in variable order. */
  async gradientsOfSlice(epoch: number, step: number, order: Uint32Array, start: number, size: number, rowOffset: number, globalBatch: number) {
    const {grads, correct, lossSum, count} = this.sliceGradients(epoch, step, order, start, size, rowOffset, globalBatch)
    this.pendingRate = learningRateFor(this.config.train, epoch, step, this.train.count)
    const flat = new Float32Array(this.variables.reduce((n, v) => n + v.size, 0))
    let at = 0
    for (const v of this.variables) {
      const values = (await grads[v.name]!.data()) as Float32Array
      flat.set(values, at)
      at += values.length
    }
    tf.dispose(grads)
    return {flat, ...(await this.readScalars(lossSum, correct, count))}
  }

  /** Data-parallel step, part 2: applies the all-reduced gradients (identical on every worker). */
  applyFlatGradients(flat: Float32Array): void {
    let at = 0
    const named = this.variables.map((v) => {
      const tensor = tf.tensor(flat.subarray(at, at + v.size), v.shape, 'float32')
      at += v.size
      return {name: v.name, tensor}
    })
    if (this.pendingRate !== undefined) setLearningRate(this.optimizer, this.pendingRate)
    this.optimizer.applyGradients(named)
    tf.dispose(named.map((n) => n.tensor))
  }

  /** Non-trainable weights (batch-norm moving statistics), flattened. */
  nonTrainable(): Float32Array {
    const weights = this.model.nonTrainableWeights
    const flat = new Float32Array(weights.reduce((n, w) => n + w.read().size, 0))
    let at = 0
    for (const w of weights) {
      const values = w.read().dataSync() as Float32Array
      flat.set(values, at)
      at += values.length
    }
    return flat
  }

  setNonTrainable(flat: Float32Array): void {
    let at = 0
    for (const w of this.model.nonTrainableWeights) {
      const size = w.read().size
      w.write(tf.tensor(flat.subarray(at, at + size), w.read().shape, 'float32'))
      at += size
    }
  }

  /** Sum and sum of squares over every weight: equal on all workers while they stay in sync. */
  checksum(): [number, number] {
    let sum = 0
    let squares = 0
    for (const w of this.model.weights) {
      const values = w.read().dataSync()
      for (let i = 0; i < values.length; i++) {
        sum += values[i]!
        squares += values[i]! * values[i]!
      }
    }
    return [sum, squares]
  }

  async validate(): Promise<ValidationResult | undefined> {
    if (this.validation.count === 0) return undefined
    const val = await predictSplit(this.model, this.validation, this.numClasses)
    return {loss: val.loss, accuracy: val.accuracy}
  }

  async checkpoint(checkpointsDir: string, position: TrainingPosition): Promise<void> {
    await saveCheckpoint(checkpointsDir, this.model, this.optimizer, position)
  }

  async saveModel(dir: string): Promise<void> {
    await saveModel(this.model, dir)
  }

  dispose(): void {
    this.model.dispose()
    this.optimizer.dispose()
  }
}

export function checkpointsOf(runDir: string): string {
  return joinPath(runDir, 'checkpoints')
}
