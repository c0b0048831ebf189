// The model instances (worker threads) against ONNX Runtime run in-process: batches cross in each
// instance's shared batch buffer, which grows with larger batches and larger models, and every batch
// must come back with its own rows, in order.
import assert from 'node:assert/strict'
import {once} from 'node:events'
import {after, before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {convertToOnnx} from '../../../src/lib/export/onnx.js'
import {createOnnxSession, runOnnx} from '../../../src/lib/export/onnx-runtime.js'
import type {ModelJson} from '../../../src/lib/export/quantize.js'
import {serialiseModel} from '../../../src/lib/model/artifact.js'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {InstancePool} from '../../../src/lib/serve/pool.js'
import type {LoadSpec} from '../../../src/lib/serve/worker-protocol.js'
import {seededRandom} from '../../support/random.js'

interface Model {
  spec: LoadSpec
  /** Floats per image. */
  size: number
  /** What ONNX Runtime answers in this thread for n images. */
  expected(input: Float32Array, n: number): Promise<Float32Array>
}

async function denseModel(key: string, shape: [number, number, number], classes: number, seed: number): Promise<Model> {
  const model = tf.sequential({layers: [
    tf.layers.flatten({inputShape: shape}),
    tf.layers.dense({units: classes, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({seed}), biasInitializer: tf.initializers.randomUniform({minval: -0.5, maxval: 0.5, seed: seed + 1})}),
  ]})
  const files = await serialiseModel(model)
  model.dispose()
  const onnxBytes = convertToOnnx({modelJson: files.modelJson as unknown as ModelJson, weights: files.weights, name: key, producerVersion: '0.0.0', metadata: {}})
  const session = await createOnnxSession(onnxBytes, 1)
  return {
    spec: {key, dir: '', runtime: 'onnx', onnxBytes, inputShape: shape, numClasses: classes, warmup: [1]},
    size: shape[0] * shape[1] * shape[2],
    expected: (input, n) => runOnnx(session, input, [n, ...shape]),
  }
}

function images(random: () => number, n: number, size: number): Float32Array {
  return Float32Array.from({length: n * size}, () => random())
}

function close(actual: Float32Array, expected: Float32Array): void {
  assert.equal(actual.length, expected.length)
  for (let i = 0; i < actual.length; i++) assert.ok(Math.abs(actual[i]! - expected[i]!) < 1e-6, `value ${i}: ${actual[i]} vs ${expected[i]}`)
}

describe('model instances (worker threads)', () => {
  let pool: InstancePool
  let small: Model
  let large: Model
  const random = seededRandom(7)

  before(async () => {
    small = await denseModel('small/1', [4, 4, 1], 3, 1)
    large = await denseModel('large/1', [8, 8, 3], 5, 2)
    pool = await InstancePool.start(2, 'cpu', new JsonLog(undefined))
    await pool.load(small.spec)
    await pool.load(large.spec)
  })

  after(async () => {
    await pool?.close()
  })

  it('answers each batch with its own rows while the shared buffer grows (more images, larger models)', async () => {
    // Small batches first, then larger ones and the larger model: each size change may grow the buffer.
    for (const [model, n] of [[small, 1], [small, 2], [small, 5], [large, 1], [large, 3], [small, 2], [large, 9], [small, 17], [large, 2]] as const) {
      const input = images(random, n, model.size)
      const {output} = await pool.run(model.spec.key, [input], n)
      close(output, await model.expected(input, n))
    }
  })

  it('takes a batch as parts (one per request) in order', async () => {
    const parts = [images(random, 1, large.size), images(random, 3, large.size), images(random, 2, large.size)]
    const whole = new Float32Array(6 * large.size)
    parts.reduce((offset, part) => (whole.set(part, offset), offset + part.length), 0)
    const {output} = await pool.run(large.spec.key, parts, 6)
    close(output, await large.expected(whole, 6))
  })

  it('keeps a batch from reading or overwriting another instance\'s batch (two at once)', async () => {
    for (let round = 0; round < 20; round++) {
      const a = images(random, 4, small.size)
      const b = images(random, 7, large.size)
      assert.equal(pool.idleCount(), 2)
      const [ra, rb] = await Promise.all([pool.run(small.spec.key, [a], 4), pool.run(large.spec.key, [b], 7)])
      close(ra.output, await small.expected(a, 4))
      close(rb.output, await large.expected(b, 7))
    }
  })

  it('gives a replaced instance a buffer of its own', async () => {
    const replaced = once(pool, 'replaced')
    await pool.crash(0)
    await replaced
    // Both instances busy at once, so that the replacement runs one of the batches.
    const a = images(random, 3, large.size)
    const b = images(random, 5, large.size)
    const [ra, rb] = await Promise.all([pool.run(large.spec.key, [a], 3), pool.run(large.spec.key, [b], 5)])
    close(ra.output, await large.expected(a, 3))
    close(rb.output, await large.expected(b, 5))
  })

  it('refuses a batch whose parts do not add up to its images, and stays usable', async () => {
    await assert.rejects(pool.run(small.spec.key, [images(random, 2, small.size)], 3), /a batch of 3 images needs 48 floats, got 32/)
    const input = images(random, 3, small.size)
    close((await pool.run(small.spec.key, [input], 3)).output, await small.expected(input, 3))
  })
})
