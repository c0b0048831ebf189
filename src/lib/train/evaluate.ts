// Model quality on a split: loss, accuracy, per-class precision/recall/F1 and the confusion matrix.
// Shared by validation during training, `ml evaluate` and export (accuracy of quantized models).
import * as tf from '../engine/tf.js'
import type {DecodedSplit} from '../data/types.js'
import {disposeBatch, makeBatch, sequentialOrder} from './pipeline.js'

export interface Predictions {
  /** count * numClasses probabilities. */
  probabilities: Float32Array
  predicted: Int32Array
  loss: number
  accuracy: number
}

const EPSILON = 1e-7

/** Runs the model over a whole split in batches (inference mode) and scores it. */
export async function predictSplit(model: tf.LayersModel, split: DecodedSplit, numClasses: number, batchSize = 256): Promise<Predictions> {
  const probabilities = new Float32Array(split.count * numClasses)
  const predicted = new Int32Array(split.count)
  const order = sequentialOrder(split.count)
  let lossSum = 0
  let correct = 0
  for (let start = 0; start < split.count; start += batchSize) {
    const batch = makeBatch(split, order, start, batchSize, numClasses)
    const probs = tf.tidy(() => model.predict(batch.xs) as tf.Tensor2D)
    const values = await probs.data()
    probs.dispose()
    disposeBatch(batch)
    probabilities.set(values, start * numClasses)
    for (let i = 0; i < batch.size; i++) {
      let best = 0
      for (let k = 1; k < numClasses; k++) if (values[i * numClasses + k]! > values[i * numClasses + best]!) best = k
      predicted[start + i] = best
      const label = batch.labels[i]!
      if (best === label) correct++
      lossSum += -Math.log(Math.min(1 - EPSILON, Math.max(EPSILON, values[i * numClasses + label]!)))
    }
  }
  const n = Math.max(1, split.count)
  return {probabilities, predicted, loss: lossSum / n, accuracy: correct / n}
}

/**
 * predictSplit for any engine (ONNX Runtime or TensorFlow.js through model/runtimes): pixels / 255
 * as training's batches compute them, in batches; the next batch is scaled while the engine runs.
 */
export async function predictSplitWith(run: (input: Float32Array, n: number) => Promise<Float32Array>, split: DecodedSplit, numClasses: number, batchSize = 256): Promise<Predictions> {
  const frame = split.height * split.width * split.channels
  const probabilities = new Float32Array(split.count * numClasses)
  const predicted = new Int32Array(split.count)
  let lossSum = 0
  let correct = 0
  const scaled = (start: number): Float32Array => {
    const n = Math.min(batchSize, split.count - start)
    const out = new Float32Array(n * frame)
    const pixels = split.pixels.subarray(start * frame, (start + n) * frame)
    for (let i = 0; i < out.length; i++) out[i] = pixels[i]! / 255
    return out
  }
  for (let start = 0; start < split.count; start += batchSize) {
    const input = scaled(start)
    const n = input.length / frame
    const values = await run(input, n)
    probabilities.set(values, start * numClasses)
    for (let i = 0; i < n; i++) {
      let best = 0
      for (let k = 1; k < numClasses; k++) if (values[i * numClasses + k]! > values[i * numClasses + best]!) best = k
      predicted[start + i] = best
      const label = split.labels[start + i]!
      if (best === label) correct++
      lossSum += -Math.log(Math.min(1 - EPSILON, Math.max(EPSILON, values[i * numClasses + label]!)))
    }
  }
  const n = Math.max(1, split.count)
  return {probabilities, predicted, loss: lossSum / n, accuracy: correct / n}
}

export interface ClassReport {
  label: string
  precision: number
  recall: number
  f1: number
  support: number
}

export interface EvaluationReport {
  split: string
  count: number
  accuracy: number
  loss: number
  perClass: ClassReport[]
  /** confusionMatrix[true][predicted] counts. */
  confusionMatrix: number[][]
  macroF1: number
}

export function scorePredictions(split: DecodedSplit, predictions: Predictions, classes: string[]): EvaluationReport {
  return {...scoreLabels(split.split, split.labels.subarray(0, split.count), predictions.predicted.subarray(0, split.count), predictions.loss, classes), accuracy: predictions.accuracy}
}

/** The report for true and predicted class indices (into `classes`) of `labels.length` images. */
export function scoreLabels(split: string, labels: Int32Array, predicted: Int32Array, loss: number, classes: string[]): EvaluationReport {
  const k = classes.length
  const matrix = Array.from({length: k}, () => new Array<number>(k).fill(0))
  let correct = 0
  for (let i = 0; i < labels.length; i++) {
    matrix[labels[i]!]![predicted[i]!]! += 1
    if (labels[i] === predicted[i]) correct++
  }
  const perClass = classes.map((label, c) => {
    const tp = matrix[c]![c]!
    const support = matrix[c]!.reduce((a, b) => a + b, 0)
    const predictedCount = matrix.reduce((a, row) => a + row[c]!, 0)
    const precision = predictedCount ? tp / predictedCount : 0
    const recall = support ? tp / support : 0
    const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0
    return {label, precision, recall, f1, support}
  })
  const withSupport = perClass.filter((c) => c.support > 0)
  return {
    split,
    count: labels.length,
    accuracy: labels.length ? correct / labels.length : 0,
    loss,
    perClass,
    confusionMatrix: matrix,
    macroF1: withSupport.length ? withSupport.reduce((a, c) => a + c.f1, 0) / withSupport.length : 0,
  }
}
