import assert from 'node:assert/strict'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import type {DecodedSplit} from '../../../src/lib/data/types.js'
import * as tf from '../../../src/lib/engine/tf.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {cachedFeatures, featureCacheDir, onnxExtractor, tfjsExtractor, type BatchExtractor, type FeatureKey} from '../../../src/lib/train/feature-cache.js'
import {tempDir} from '../../support/fixtures.js'

/** A split of `count` 2x2x1 images whose pixels all equal the example index. */
function split(name: 'train' | 'validation', count: number): DecodedSplit {
  const pixels = new Uint8Array(count * 4)
  for (let i = 0; i < count; i++) pixels.fill(i, i * 4, i * 4 + 4)
  return {split: name, count, height: 2, width: 2, channels: 1, pixels, labels: new Int32Array(count)} as unknown as DecodedSplit
}

/** Features = [sum of pixels scaled to [0,1], 1]: counts how many images it saw. */
function countingExtractor(): {make: () => Promise<BatchExtractor>; images: () => number} {
  let images = 0
  return {
    images: () => images,
    make: async () => ({
      engine: 'tfjs',
      async run(values, count) {
        images += count
        const out = new Float32Array(count * 2)
        for (let i = 0; i < count; i++) {
          let sum = 0
          for (let k = 0; k < 4; k++) sum += values[i * 4 + k]! / 255
          out[i * 2] = sum
          out[i * 2 + 1] = 1
        }
        return out
      },
      close: async () => {},
    }),
  }
}

describe('feature cache', () => {
  let dir: string
  let cleanup: () => Promise<void>
  const key: FeatureKey = {dataset: 'v1-fingerprint', base: 'a'.repeat(64), output: 'features', inputRange: [0, 1]}
  const train = split('train', 10)
  const validation = split('validation', 3)

  before(async () => ({dir, cleanup} = await tempDir()))
  after(() => cleanup())

  it('computes features on a miss, reads them back on a hit', async () => {
    const counter = countingExtractor()
    const first = await cachedFeatures({key, featureSize: 2, train, validation, extractor: counter.make, cacheRoot: dir, batchSize: 4})
    assert.equal(first.hit, false)
    assert.equal(counter.images(), 13)
    // Example 7's pixels are 7/255 each: sum 4*7/255.
    assert.ok(Math.abs(first.train.values[7 * 2]! - (4 * 7) / 255) < 1e-6)
    const second = await cachedFeatures({key, featureSize: 2, train, validation, extractor: counter.make, cacheRoot: dir})
    assert.equal(second.hit, true)
    assert.equal(counter.images(), 13, 'a hit runs no extraction')
    assert.deepEqual(second.train.values, first.train.values)
    assert.deepEqual(second.validation.values, first.validation.values)
  })

  it('misses when the dataset version, the base or the cut point changes', async () => {
    for (const changed of [{...key, dataset: 'v2-fingerprint'}, {...key, base: 'b'.repeat(64)}, {...key, output: 'block_add'}, {...key, inputRange: [-1, 1] as [number, number]}]) {
      const counter = countingExtractor()
      const result = await cachedFeatures({key: changed, featureSize: 2, train, validation, extractor: counter.make, cacheRoot: dir})
      assert.equal(result.hit, false, `key change ${JSON.stringify(changed)} should miss`)
      assert.equal(counter.images(), 13)
      assert.notEqual(featureCacheDir(changed, dir), featureCacheDir(key, dir))
    }
  })

  it('recomputes a damaged entry instead of trusting it', async () => {
    const file = path.join(featureCacheDir(key, dir), 'train.f32')
    const bytes = await readFile(file)
    bytes[5] = bytes[5]! ^ 0xff
    await writeFile(file, bytes)
    const counter = countingExtractor()
    const result = await cachedFeatures({key, featureSize: 2, train, validation, extractor: counter.make, cacheRoot: dir})
    assert.equal(result.hit, false)
    assert.equal(counter.images(), 13)
    const again = await cachedFeatures({key, featureSize: 2, train, validation, extractor: counter.make, cacheRoot: dir})
    assert.equal(again.hit, true, 'the recomputed entry is used next time')
  })
})

describe('feature engines', () => {
  before(() => initEngine('cpu'))

  it('onnxruntime (uint8 pixels scaled inside the graph) gives the features tfjs gives', async () => {
    const features = tf.sequential({
      layers: [
        tf.layers.conv2d({inputShape: [8, 8, 3], filters: 4, kernelSize: 3, strides: 2, padding: 'same', kernelInitializer: tf.initializers.glorotUniform({seed: 1}), biasInitializer: 'ones'}),
        tf.layers.reLU({maxValue: 6}),
        tf.layers.globalAveragePooling2d({}),
      ],
    })
    const count = 5
    const pixels = new Uint8Array(count * 8 * 8 * 3)
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7919 + 13) % 256
    const onnx = await onnxExtractor(features)
    const reference = tfjsExtractor((x) => features.apply(x, {training: false}) as tf.Tensor2D, [8, 8, 3])
    try {
      assert.equal(onnx.engine, 'onnxruntime')
      // A view into a larger buffer (as a batch of a decoded split is): only its own bytes count.
      const padded = new Uint8Array(pixels.length + 192)
      padded.set(pixels, 192)
      const got = await onnx.run(padded.subarray(192), count)
      const want = await reference.run(pixels, count)
      assert.equal(got.length, count * 4)
      let diff = 0
      for (let i = 0; i < got.length; i++) diff = Math.max(diff, Math.abs(got[i]! - want[i]!))
      assert.ok(diff < 1e-5, `max difference ${diff}`)
      assert.ok(want.some((v) => v !== want[0]), 'the features vary across images')
    } finally {
      await onnx.close()
      await reference.close()
      features.dispose()
    }
  })
})
