// The training input pipeline: a seeded shuffle per epoch, augmentation, and batches of float
// tensors built from the uint8 split held in memory (pixels / 255, the one normalisation).
import * as tf from '@tensorflow/tfjs'
import type {TrainConfig} from '../config/schema.js'
import type {DecodedSplit} from '../data/types.js'
import type {Rng} from './rng.js'

export interface Batch {
  xs: tf.Tensor4D
  /** One-hot labels. */
  ys: tf.Tensor2D
  labels: Int32Array
  size: number
}

export function stepsPerEpoch(count: number, batchSize: number): number {
  return Math.ceil(count / batchSize)
}

/** Copies image `src` into `out` at `at`, shifted by (dx, dy) with zero fill and optionally mirrored. */
function augmentInto(out: Float32Array, at: number, pixels: Uint8Array, src: number, h: number, w: number, c: number, dx: number, dy: number, flip: boolean) {
  const size = h * w * c
  const base = src * size
  for (let y = 0; y < h; y++) {
    const sy = y - dy
    for (let x = 0; x < w; x++) {
      const sx0 = x - dx
      const sx = flip ? w - 1 - sx0 : sx0
      const o = at + (y * w + x) * c
      if (sy < 0 || sy >= h || sx0 < 0 || sx0 >= w) {
        for (let k = 0; k < c; k++) out[o + k] = 0
      } else {
        const s = base + (sy * w + sx) * c
        for (let k = 0; k < c; k++) out[o + k] = pixels[s + k]! / 255
      }
    }
  }
}

export interface AugmentOptions {
  config: TrainConfig['augment']
  /** The generator of one example, by its row in the global batch: layout-independent randomness. */
  rngFor: (row: number) => Rng
  /** Row, in the global batch, of this batch's first example. */
  rowOffset: number
}

/**
 * Builds the batch of examples order[start .. start+batchSize). With augmentation on, each image
 * gets a random shift (and flip) drawn from its own generator.
 */
export function makeBatch(
  split: DecodedSplit,
  order: ArrayLike<number>,
  start: number,
  batchSize: number,
  numClasses: number,
  augment?: AugmentOptions,
): Batch {
  const {height: h, width: w, channels: c} = split
  const size = Math.min(batchSize, order.length - start)
  const imageSize = h * w * c
  const data = new Float32Array(size * imageSize)
  const labels = new Int32Array(size)
  const shift = augment?.config.shift ?? 0
  const flip = augment?.config.flipHorizontal ?? false
  for (let i = 0; i < size; i++) {
    const src = order[start + i]!
    labels[i] = split.labels[src]!
    if (augment && (shift > 0 || flip)) {
      const rng = augment.rngFor(augment.rowOffset + i)
      const dx = shift > 0 ? Math.floor(rng() * (2 * shift + 1)) - shift : 0
      const dy = shift > 0 ? Math.floor(rng() * (2 * shift + 1)) - shift : 0
      augmentInto(data, i * imageSize, split.pixels, src, h, w, c, dx, dy, flip && rng() < 0.5)
    } else {
      const from = src * imageSize
      for (let k = 0; k < imageSize; k++) data[i * imageSize + k] = split.pixels[from + k]! / 255
    }
  }
  const xs = tf.tensor4d(data, [size, h, w, c])
  const ys = tf.tidy(() => tf.oneHot(tf.tensor1d(labels, 'int32'), numClasses).toFloat() as tf.Tensor2D)
  return {xs, ys, labels, size}
}

export function disposeBatch(batch: Batch): void {
  batch.xs.dispose()
  batch.ys.dispose()
}

/** The identity order 0..n-1 (evaluation does not shuffle). */
export function sequentialOrder(n: number): Uint32Array {
  const order = new Uint32Array(n)
  for (let i = 0; i < n; i++) order[i] = i
  return order
}
