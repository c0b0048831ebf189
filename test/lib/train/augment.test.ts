import assert from 'node:assert/strict'
import {before, describe, it} from 'node:test'
import {TrainSchema} from '../../../src/lib/config/schema.js'
import type {DecodedSplit} from '../../../src/lib/data/types.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {makeBatch} from '../../../src/lib/train/pipeline.js'
import {rngFor} from '../../../src/lib/train/rng.js'

const H = 12
const W = 16
/** Two RGB images: a horizontal gradient with a bright square top-left, and noise. */
function photos(): DecodedSplit {
  const pixels = new Uint8Array(2 * H * W * 3)
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      for (let k = 0; k < 3; k++) {
        pixels[(y * W + x) * 3 + k] = x < 4 && y < 4 ? 250 : 10 + x * 12 + k * 3
        pixels[H * W * 3 + (y * W + x) * 3 + k] = (x * 37 + y * 91 + k * 13) % 256
      }
    }
  }
  return {split: 'train', count: 2, height: H, width: W, channels: 3, pixels, labels: Int32Array.from([0, 1]), keys: ['a', 'b']}
}

function batch(augment: object, seed = 1, step = 0): Float32Array {
  const config = TrainSchema.parse({augment}).augment
  const b = makeBatch(photos(), [0, 1], 0, 2, 2, {config, rngFor: (row) => rngFor(seed, `augment:${step}:${row}`), rowOffset: 0})
  const values = b.xs.dataSync() as Float32Array
  b.xs.dispose()
  b.ys.dispose()
  return values
}

describe('photo augmentation', () => {
  before(() => initEngine('cpu'))

  it('is off by default: pixels / 255 exactly', () => {
    const plain = batch({})
    const split = photos()
    for (let i = 0; i < plain.length; i++) assert.equal(plain[i], Math.fround(split.pixels[i]! / 255))
  })

  it('is seeded: same seed and step, same images; another step, other images', () => {
    const options = {crop: 0.5, flipHorizontal: true, brightness: 0.2, contrast: 0.3}
    assert.deepEqual(batch(options, 3), batch(options, 3))
    assert.notDeepEqual(batch(options, 3, 0), batch(options, 3, 1))
  })

  it('crops to a window and resizes back, inside [0,1]', () => {
    const cropped = batch({crop: 0.3}, 5)
    assert.ok(cropped.every((v) => v >= 0 && v <= 1))
    assert.notDeepEqual(cropped, batch({}))
    // A full-area "crop" is the identity (bilinear resize at scale 1 samples pixel centres).
    const full = batch({crop: 1, brightness: 0}, 5)
    assert.deepEqual(full, batch({}))
  })

  it('jitters brightness and contrast around the image mean, clipped to [0,1]', () => {
    const plain = batch({})
    const jittered = batch({brightness: 0.3, contrast: 0.5}, 9)
    assert.ok(jittered.every((v) => v >= 0 && v <= 1))
    const size = H * W * 3
    const mean = (a: Float32Array, i: number) => a.subarray(i * size, (i + 1) * size).reduce((s, v) => s + v, 0) / size
    const spread = (a: Float32Array, i: number) => {
      const m = mean(a, i)
      return a.subarray(i * size, (i + 1) * size).reduce((s, v) => s + Math.abs(v - m), 0) / size
    }
    // Some image got brighter or darker and its spread changed: both draws took effect.
    assert.ok([0, 1].some((i) => Math.abs(mean(jittered, i) - mean(plain, i)) > 0.01))
    assert.ok([0, 1].some((i) => Math.abs(spread(jittered, i) - spread(plain, i)) > 0.005))
  })

  it('mirrors exactly the images whose draw says flip, on the photo path too', () => {
    const size = H * W * 3
    const plain = batch({})
    for (const seed of [11, 12, 13, 14]) {
      // The first draw of an image's generator decides its flip.
      const flips = [0, 1].map((row) => rngFor(seed, `augment:0:${row}`)() < 0.5)
      const flipped = batch({flipHorizontal: true, contrast: 1e-9}, seed)
      for (let i = 0; i < 2; i++) {
        let diff = 0
        for (let y = 0; y < H; y++) {
          for (let x = 0; x < W; x++) {
            const source = flips[i] ? W - 1 - x : x
            for (let k = 0; k < 3; k++) diff = Math.max(diff, Math.abs(flipped[i * size + (y * W + x) * 3 + k]! - plain[i * size + (y * W + source) * 3 + k]!))
          }
        }
        assert.ok(diff < 1e-4, `seed ${seed} image ${i} (flip ${flips[i]}) differs by ${diff}`)
      }
    }
  })
})
