// The training input pipeline: a seeded shuffle per epoch, augmentation, and batches of float
// tensors built from the uint8 split held in memory (pixels / 255, the one normalisation).
import * as tf from '../engine/tf.js'
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

/** Per-image photo augmentation draws: a crop window (in source pixels), flip, brightness, contrast. */
interface PhotoDraw {
  x0: number
  y0: number
  cw: number
  ch: number
  flip: boolean
  brightness: number
  contrast: number
}

function drawPhoto(rng: Rng, h: number, w: number, config: TrainConfig['augment'], flip: boolean): PhotoDraw {
  let x0 = 0
  let y0 = 0
  let cw = w
  let ch = h
  if (config.crop < 1) {
    // Inception-style random resized crop: area share in [crop, 1], aspect ratio log-uniform in [3/4, 4/3].
    const area = config.crop + rng() * (1 - config.crop)
    const aspect = Math.exp(Math.log(3 / 4) + rng() * (Math.log(4 / 3) - Math.log(3 / 4)))
    cw = Math.min(w, Math.max(1, Math.round(Math.sqrt(area * aspect) * w)))
    ch = Math.min(h, Math.max(1, Math.round(Math.sqrt(area / aspect) * h)))
    x0 = Math.floor(rng() * (w - cw + 1))
    y0 = Math.floor(rng() * (h - ch + 1))
  }
  const brightness = config.brightness > 0 ? (rng() * 2 - 1) * config.brightness : 0
  const contrast = config.contrast > 0 ? 1 + (rng() * 2 - 1) * config.contrast : 1
  return {x0, y0, cw, ch, flip, brightness, contrast}
}

/** Writes image `src` cropped to the draw's window, resized back (bilinear), flipped and jittered. */
function photoAugmentInto(out: Float32Array, at: number, pixels: Uint8Array, src: number, h: number, w: number, c: number, d: PhotoDraw) {
  const base = src * h * w * c
  const sy = d.ch / h
  const sx = d.cw / w
  for (let y = 0; y < h; y++) {
    const fy = Math.min(d.ch - 1, Math.max(0, (y + 0.5) * sy - 0.5)) + d.y0
    const y1 = Math.floor(fy)
    const y2 = Math.min(y1 + 1, d.y0 + d.ch - 1)
    const ty = fy - y1
    for (let x = 0; x < w; x++) {
      const xo = d.flip ? w - 1 - x : x
      const fx = Math.min(d.cw - 1, Math.max(0, (x + 0.5) * sx - 0.5)) + d.x0
      const x1 = Math.floor(fx)
      const x2 = Math.min(x1 + 1, d.x0 + d.cw - 1)
      const tx = fx - x1
      const o = at + (y * w + xo) * c
      for (let k = 0; k < c; k++) {
        const p11 = pixels[base + (y1 * w + x1) * c + k]!
        const p12 = pixels[base + (y1 * w + x2) * c + k]!
        const p21 = pixels[base + (y2 * w + x1) * c + k]!
        const p22 = pixels[base + (y2 * w + x2) * c + k]!
        out[o + k] = ((p11 * (1 - tx) + p12 * tx) * (1 - ty) + (p21 * (1 - tx) + p22 * tx) * ty) / 255
      }
    }
  }
  if (d.brightness === 0 && d.contrast === 1) return
  const size = h * w * c
  let mean = 0
  for (let i = 0; i < size; i++) mean += out[at + i]!
  mean /= size
  for (let i = 0; i < size; i++) out[at + i] = Math.min(1, Math.max(0, (out[at + i]! - mean) * d.contrast + mean + d.brightness))
}

/** Whether the photo augmentations (crop, brightness, contrast) are on. */
export function photoAugmentation(config: TrainConfig['augment']): boolean {
  return config.crop < 1 || config.brightness > 0 || config.contrast > 0
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
    if (augment && photoAugmentation(augment.config)) {
      const rng = augment.rngFor(augment.rowOffset + i)
      const mirrored = flip && rng() < 0.5
      photoAugmentInto(data, i * imageSize, split.pixels, src, h, w, c, drawPhoto(rng, h, w, augment.config, mirrored))
    } else if (augment && (shift > 0 || flip)) {
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
