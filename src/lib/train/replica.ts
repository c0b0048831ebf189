// One model replica: its weights, optimizer and data. A single-process run has one; data-parallel
// training has one per worker, each computing gradients on its slice of every global batch.
import * as tf from '../engine/tf.js'
import type {MlConfig} from '../config/schema.js'
import type {DecodedSplit} from '../data/types.js'
import {joinPath} from '../storage/index.js'
import {loadLatestCheckpoint, saveCheckpoint, type TrainingPosition} from './checkpoint.js'
import {withDropoutContext} from '../model/dropout.js'
import {predictSplit} from './evaluate.js'
import {buildModel} from '../model/build.js'
import {saveModel} from '../model/artifact.js'
import {makeBatch, photoAugmentation, type Batch} from './pipeline.js'
import {rngFor} from './rng.js'
import {countLabels, resolveClassWeights} from './class-weights.js'
import {learningRateFor, setLearningRate} from './schedule.js'
import {defaultPreset, HeadSchema, PHOTO_PRESET_MIN_SIDE} from '../config/schema.js'
import {loadBase, type LoadedBase} from '../model/base.js'
import {baseIsFrozen, buildTransferModel, setBaseTrainable, splitTransferModel, type TransferModel} from '../model/head.js'
import {cachedFeatures, onnxExtractor, tfjsExtractor, type BatchExtractor, type FeatureSet, type SplitFeatures} from './feature-cache.js'
import {UserError} from '../errors.js'

/** Training phases of a run on model.base: the head (base as configured), then train.fineTune. */
export type TrainingPhase = 'head' | 'fine-tune'

/** The phase epoch `epoch` (0-based) belongs to. */
export function phaseAt(config: MlConfig, epoch: number): TrainingPhase {
  return config.train.fineTune && epoch >= config.train.epochs ? 'fine-tune' : 'head'
}

/** Epochs of the whole run: train.epochs plus train.fineTune.epochs. */
export function totalEpochs(config: MlConfig): number {
  return config.train.epochs + (config.train.fineTune?.epochs ?? 0)
}

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

export function makeOptimizer(train: MlConfig['train'], phase: TrainingPhase = 'head'): tf.Optimizer {
  const lr = phase === 'fine-tune' ? train.fineTune!.learningRate : train.learningRate
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

/** A batch as the network takes it: images, or the cached features of the same examples. */
type InputBatch = Pick<Batch, 'ys' | 'labels' | 'size'> & {x: tf.Tensor}

/** Transfer-learning state of a replica built on model.base. */
interface Transfer {
  parts: TransferModel
  base: LoadedBase
  /** Cached base features of the splits, while the base is frozen and its input not augmented. */
  features?: FeatureSet
}

export class Replica {
  variables: tf.Variable[] = []
  readonly notes: string[] = []
  /** Loss weight per class (train.classWeights), undefined when unweighted. */
  private readonly classWeights?: number[]
  /** The scheduled learning rate of the step whose gradients applyFlatGradients applies next. */
  private pendingRate?: number

  private constructor(
    readonly config: MlConfig,
    readonly model: tf.LayersModel,
    public optimizer: tf.Optimizer,
    readonly numClasses: number,
    readonly train: DecodedSplit,
    readonly validation: DecodedSplit,
    private phase: TrainingPhase,
    /** The dataset version (manifest fingerprint): part of the feature-cache key. */
    private readonly datasetFingerprint: string,
    private readonly transfer?: Transfer,
  ) {
    this.refreshVariables()
    // By class index here: the trainer hands replicas classWeights already resolved from class names.
    const setting = config.train.classWeights
    this.classWeights = setting === undefined ? undefined : resolveClassWeights(setting, Array.from({length: numClasses}, (_, i) => String(i)), countLabels(train.labels, numClasses))
  }

  /** The learning rate of a step: train.schedule in the head phase, train.fineTune's rate after it. */
  private rateFor(epoch: number, step: number): number {
    if (this.phase === 'fine-tune') return this.config.train.fineTune!.learningRate
    return learningRateFor(this.config.train, epoch, step, this.train.count)
  }

  /** Fixed order: optimizer state is matched to variables by position. */
  private refreshVariables(): void {
    this.variables = this.model.trainableWeights.map((w) => w.read() as tf.Variable)
  }

  /** A fresh replica (seeded init), or one restored from the latest checkpoint in `checkpointsDir`. */
  static async create(
    config: MlConfig,
    numClasses: number,
    train: DecodedSplit,
    validation: DecodedSplit,
    checkpointsDir: string | undefined,
    datasetFingerprint: string,
  ): Promise<{replica: Replica; position?: TrainingPosition}> {
    const checkpoint = checkpointsDir ? await loadLatestCheckpoint(checkpointsDir) : undefined
    const phase = phaseAt(config, checkpoint?.position.epoch ?? 0)
    const image = {height: train.height, width: train.width, channels: train.channels as 1 | 3, fit: config.data.image.fit}
    let model: tf.LayersModel
    let transfer: Transfer | undefined
    if (config.model.base) {
      const base = await loadBase(config.model.base, image)
      const parts = checkpoint ? splitTransferModel(checkpoint.model) : buildTransferModel(base, config.model.head ?? HeadSchema.parse({}), numClasses, config.train.seed)
      if (checkpoint) base.dispose()
      setBaseTrainable(parts, phase === 'fine-tune' ? config.train.fineTune!.unfreeze : config.model.base.trainable)
      model = parts.model
      transfer = {parts, base}
    } else {
      model = checkpoint?.model ?? buildModel(config.model, image, numClasses, config.train.seed)
    }
    try {
      // With a base, cached features may shrink the pass to the head: train.microBatch is not judged
      // by the whole network then, only one example is.
      checkMemoryFits(model, config.model.base ? {...config.train, microBatch: 'auto'} : config.train, image)
    } catch (error) {
      model.dispose()
      throw error
    }
    const optimizer = makeOptimizer(config.train, phase)
    // Optimizer state belongs to the phase it was saved in: a checkpoint taken at the end of the
    // head phase resumes into the fine-tune phase with a fresh optimizer, as an unbroken run does.
    if (checkpoint && (checkpoint.position.phase ?? 'head') === phase) await optimizer.setWeights(checkpoint.optimizerWeights)
    if (checkpoint) tf.dispose(checkpoint.optimizerWeights.map((w) => w.tensor))
    const replica = new Replica(config, model, optimizer, numClasses, train, validation, phase, datasetFingerprint, transfer)
    const preset = !config.model.base && !config.model.layers ? (config.model.preset ?? defaultPreset(image)) : undefined
    if (preset) {
      const byDefault = preset === defaultPreset(image) ? ` (the default for ${image.height}x${image.width} images: cnn-photo from ${PHOTO_PRESET_MIN_SIDE} px, cnn-small below)` : ''
      replica.notes.push(`Model: preset ${preset}${byDefault}.`)
    }
    await replica.prepareFeatures()
    return {replica, position: checkpoint?.position}
  }

  /** With a frozen base and no augmentation, the base runs once per example (cached), not per epoch. */
  private async prepareFeatures(): Promise<void> {
    const t = this.transfer
    if (!t) return
    t.features = undefined
    const augment = this.config.train.augment
    const augmented = augment.shift > 0 || augment.flipHorizontal || photoAugmentation(augment)
    if (!baseIsFrozen(t.parts) || augmented) {
      this.notes.push(`Base ${t.base.output}: ${augmented ? 'augmented input' : 'trainable layers'}, so it runs every step (no feature cache).`)
      return
    }
    const extractor = async (): Promise<BatchExtractor> => {
      try {
        return await onnxExtractor(t.parts.features)
      } catch (error) {
        if (!(error instanceof UserError)) throw error
        this.notes.push(`Base features on tfjs: the ONNX exporter refused the base (${error.message}).`)
        return tfjsExtractor((x) => t.parts.features.apply(x, {training: false}) as tf.Tensor2D, t.base.inputShape)
      }
    }
    t.features = await cachedFeatures({
      key: {dataset: this.datasetFingerprint, base: t.base.sha256, output: t.base.output, inputRange: t.base.inputRange},
      featureSize: t.parts.featureSize,
      train: this.train,
      validation: this.validation,
      extractor,
    })
    this.notes.push(
      t.features.hit
        ? `Base features (${t.parts.featureSize} per image at ${t.base.output}) from the cache: only the head trains.`
        : `Base features (${t.parts.featureSize} per image at ${t.base.output}) computed once with ${t.features.engine} at ${t.features.imagesPerSec.toFixed(1)} images/s and cached: only the head trains.`,
    )
  }

  /** Enters a training phase: fine-tune unfreezes the asked base layers under a fresh optimizer. */
  async startPhase(phase: TrainingPhase): Promise<string[]> {
    if (phase === this.phase || !this.transfer) return []
    const unfrozen = setBaseTrainable(this.transfer.parts, this.config.train.fineTune!.unfreeze)
    this.phase = phase
    this.optimizer.dispose()
    this.optimizer = makeOptimizer(this.config.train, phase)
    this.refreshVariables()
    await this.prepareFeatures()
    return unfrozen
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
    const batch = this.inputBatch(epoch, step, order, start, size, rowOffset)
    let correct: tf.Scalar | undefined
    let lossSum: tf.Scalar | undefined
    const {grads, value} = withDropoutContext({seed, epoch, step, rowOffset}, () =>
      tf.variableGrads(() => {
        const probs = this.forward(batch.x, true)
        correct = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(probs, 1), tf.argMax(batch.ys, 1)), 'float32')) as tf.Scalar)
        const perExample = tf.metrics.categoricalCrossentropy(batch.ys, probs)
        lossSum = tf.keep(tf.sum(perExample) as tf.Scalar)
        // Class weights scale what is optimised; the reported loss stays comparable to validation's.
        const objective = this.classWeights ? tf.mul(perExample, tf.tensor1d(Array.from(batch.labels, (l) => this.classWeights![l]!))) : perExample
        return tf.div(tf.sum(objective), globalBatch) as tf.Scalar
      }, this.variables),
    )
    value.dispose()
    tf.dispose([batch.x, batch.ys])
    return {grads, correct: correct!, lossSum: lossSum!, count: batch.size}
  }

  /** The examples order[start, start+size): cached base features when there are some, else images. */
  private inputBatch(epoch: number, step: number, order: Uint32Array, start: number, size: number, rowOffset: number): InputBatch {
    const cached = this.transfer?.features?.train
    if (cached) return featureBatch(cached, this.train.labels, order, start, size, this.numClasses)
    const {seed} = this.config.train
    const batch = makeBatch(this.train, order, start, size, this.numClasses, {
      config: this.config.train.augment,
      rngFor: (row) => rngFor(seed, `augment:${step}:${row}`, epoch),
      rowOffset,
    })
    return {x: batch.xs, ys: batch.ys, labels: batch.labels, size: batch.size}
  }

  /**
   * Probabilities of a batch. On model.base the base runs in inference mode even while some of its
   * layers train (batch-norm statistics stay the pretrained ones, as Keras advises for fine-tuning);
   * with cached features only the head runs.
   */
  private forward(x: tf.Tensor, training: boolean): tf.Tensor2D {
    const t = this.transfer
    if (!t) return this.model.apply(x, {training}) as tf.Tensor2D
    if (t.features) return t.parts.head.apply(x, {training}) as tf.Tensor2D
    return t.parts.head.apply(t.parts.features.apply(x, {training: false}) as tf.Tensor, {training}) as tf.Tensor2D
  }

  private async readScalars(lossSum: tf.Scalar, correct: tf.Scalar, count: number): Promise<SliceResult> {
    const [l, c] = await Promise.all([lossSum.data(), correct.data()])
    tf.dispose([lossSum, correct])
    return {lossSum: l[0]!, correct: c[0]!, count}
  }

  /** Examples per forward/backward pass: train.microBatch, or what fits the activation budget. */
  get microBatch(): number {
    const configured = this.config.train.microBatch
    if (configured !== 'auto') return configured
    // With cached features only the head runs: its activations are tiny.
    const net = this.transfer?.features ? this.transfer.parts.head : this.model
    return microBatchFor(net)
  }

  /**
   * Single-process step: gradients of the whole global batch, applied at once. A batch larger than
   * the micro-batch is computed in slices whose gradients (each of the mean over the whole batch,
   * with dropout and augmentation keyed by row) add up to the whole batch's; batch-norm statistics
   * are then per slice, as in data-parallel training.
   */
  async step(epoch: number, step: number, order: Uint32Array, start: number, size: number): Promise<SliceResult> {
    const micro = Math.max(1, Math.min(size, this.microBatch))
    let total: tf.NamedTensorMap | undefined
    let lossSum: tf.Scalar | undefined
    let correct: tf.Scalar | undefined
    for (let offset = 0; offset < size; offset += micro) {
      const slice = this.sliceGradients(epoch, step, order, start + offset, Math.min(micro, size - offset), offset, size)
      if (!total) {
        ;({grads: total, lossSum, correct} = slice)
        continue
      }
      const previous: tf.NamedTensorMap = total
      total = Object.fromEntries(Object.entries(previous).map(([name, g]) => [name, tf.add(g, slice.grads[name]!)]))
      const [l, c] = [tf.add(lossSum!, slice.lossSum) as tf.Scalar, tf.add(correct!, slice.correct) as tf.Scalar]
      tf.dispose([previous, slice.grads, lossSum!, correct!, slice.lossSum, slice.correct] as unknown as tf.Tensor[])
      lossSum = l
      correct = c
    }
    setLearningRate(this.optimizer, this.rateFor(epoch, step))
    this.optimizer.applyGradients(this.variables.map((v) => ({name: v.name, tensor: total![v.name]!})))
    tf.dispose(total!)
    return this.readScalars(lossSum!, correct!, size)
  }

  /** Data-parallel step, part 1: this worker's slice gradients, flattened in variable order. */
  async gradientsOfSlice(epoch: number, step: number, order: Uint32Array, start: number, size: number, rowOffset: number, globalBatch: number) {
    const {grads, correct, lossSum, count} = this.sliceGradients(epoch, step, order, start, size, rowOffset, globalBatch)
    this.pendingRate = this.rateFor(epoch, step)
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
    const cached = this.transfer?.features?.validation
    if (cached) return scoreFeatures(this.transfer!.parts.head, cached, this.validation.labels, this.numClasses)
    const val = await predictSplit(this.model, this.validation, this.numClasses)
    return {loss: val.loss, accuracy: val.accuracy}
  }

  async checkpoint(checkpointsDir: string, position: TrainingPosition): Promise<void> {
    await saveCheckpoint(checkpointsDir, this.model, this.optimizer, {...position, phase: this.phase})
  }

  async saveModel(dir: string): Promise<void> {
    await saveModel(this.model, dir)
  }

  dispose(): void {
    this.model.dispose()
    this.optimizer.dispose()
    if (this.transfer?.base.kind === 'graph') this.transfer.base.dispose()
  }
}

export function checkpointsOf(runDir: string): string {
  return joinPath(runDir, 'checkpoints')
}

/** A batch of cached feature rows and their one-hot labels. */
function featureBatch(features: SplitFeatures, labels: Int32Array, order: ArrayLike<number>, start: number, size: number, numClasses: number): InputBatch {
  const n = Math.min(size, order.length - start)
  const {featureSize} = features
  const data = new Float32Array(n * featureSize)
  const batchLabels = new Int32Array(n)
  for (let i = 0; i < n; i++) {
    const src = order[start + i]!
    data.set(features.values.subarray(src * featureSize, (src + 1) * featureSize), i * featureSize)
    batchLabels[i] = labels[src]!
  }
  const ys = tf.tidy(() => tf.oneHot(tf.tensor1d(batchLabels, 'int32'), numClasses).toFloat() as tf.Tensor2D)
  return {x: tf.tensor2d(data, [n, featureSize]), ys, labels: batchLabels, size: n}
}

const EPSILON = 1e-7

/** Validation loss and accuracy of the head on cached features (as predictSplit scores images). */
async function scoreFeatures(head: tf.LayersModel, features: SplitFeatures, labels: Int32Array, numClasses: number): Promise<ValidationResult> {
  const probs = tf.tidy(() => head.predict(tf.tensor2d(features.values, [features.count, features.featureSize])) as tf.Tensor2D)
  const values = await probs.data()
  probs.dispose()
  let lossSum = 0
  let correct = 0
  for (let i = 0; i < features.count; i++) {
    let best = 0
    for (let k = 1; k < numClasses; k++) if (values[i * numClasses + k]! > values[i * numClasses + best]!) best = k
    if (best === labels[i]) correct++
    lossSum += -Math.log(Math.min(1 - EPSILON, Math.max(EPSILON, values[i * numClasses + labels[i]!]!)))
  }
  const n = Math.max(1, features.count)
  return {loss: lossSum / n, accuracy: correct / n}
}

/** Activation memory one training pass may use: conservative for the wasm engine's 32-bit heap. */
export const ACTIVATION_BUDGET_BYTES = 1 << 30

/**
 * Bytes one example costs in a training pass: every layer's output in float32, kept for the
 * backward pass, and about as much again for its gradient.
 */
export function bytesPerExample(model: tf.LayersModel): number {
  let values = 0
  for (const layer of model.layers) {
    const shapes = (Array.isArray(layer.outputShape[0]) ? layer.outputShape : [layer.outputShape]) as Array<Array<number | null>>
    for (const shape of shapes) values += shape.slice(1).reduce<number>((a, d) => a * (d ?? 1), 1)
  }
  return values * 4 * 2
}

/**
 * Refuses, before any step runs, a model whose training pass cannot fit the engine's memory: one
 * example over the budget (no batch size fits), or a train.microBatch above what fits. Without this
 * the wasm engine dies mid-step with Aborted().
 */
export function checkMemoryFits(model: tf.LayersModel, train: Pick<MlConfig['train'], 'batchSize' | 'microBatch'>, image: {height: number; width: number; channels: number}, budget = ACTIVATION_BUDGET_BYTES): void {
  const perExample = bytesPerExample(model)
  const mb = (bytes: number) => `${Math.ceil(bytes / (1 << 20))} MB`
  const size = `${image.height}x${image.width}x${image.channels}`
  if (perExample > budget) {
    throw new UserError(`one ${size} example needs about ${mb(perExample)} of activations for a training pass, over the engine's ${mb(budget)}: no batch size fits this model`, {
      code: 'EXAMPLE_TOO_LARGE',
      exit: 'usage',
      details: {bytesPerExample: perExample, budgetBytes: budget},
      suggestions: [
        `Use model.preset cnn-photo (strided stem, global pooling: made for photo-size inputs), or model.base (a pretrained network, features cached).`,
        'Or lower data.image and run `ml ingest` again.',
      ],
    })
  }
  const fits = Math.floor(budget / perExample)
  const micro = train.microBatch
  if (micro !== 'auto' && Math.min(micro, train.batchSize) > fits) {
    throw new UserError(`train.microBatch ${micro} does not fit the engine's memory: one ${size} example needs about ${mb(perExample)} of ${mb(budget)}, so at most ${fits} per pass`, {
      code: 'MICRO_BATCH_TOO_LARGE',
      exit: 'usage',
      details: {microBatch: micro, fits, bytesPerExample: perExample, budgetBytes: budget},
      suggestions: [`Set train.microBatch to ${fits} or less (the same updates: gradients are summed over the batch), or to auto.`],
    })
  }
}

/** The largest micro-batch whose activations fit the budget (at least 1). */
export function microBatchFor(model: tf.LayersModel, budget = ACTIVATION_BUDGET_BYTES): number {
  return Math.max(1, Math.floor(budget / bytesPerExample(model)))
}
