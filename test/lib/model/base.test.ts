import assert from 'node:assert/strict'
import {readdir} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import * as ort from 'onnxruntime-node'
import {BaseSchema, HeadSchema, type BaseConfig, type ImageSpec} from '../../../src/lib/config/schema.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {UserError} from '../../../src/lib/errors.js'
import {convertToOnnx} from '../../../src/lib/export/onnx.js'
import type {ModelJson} from '../../../src/lib/export/quantize.js'
import {loadModel, saveModel, serialiseModel} from '../../../src/lib/model/artifact.js'
import {loadBase, weightedLayers} from '../../../src/lib/model/base.js'
import {fetchBase} from '../../../src/lib/model/base-source.js'
import {buildTransferModel, setBaseTrainable, splitTransferModel} from '../../../src/lib/model/head.js'
import {tempDir} from '../../support/fixtures.js'
import {serveFolder, tinyBase, writeTinyBase, writeTinyGraphBase, type StaticServer} from '../../support/bases.js'

const IMAGE: ImageSpec = {height: 16, width: 16, channels: 3, fit: 'fill'}
const base = (source: string, more: Partial<BaseConfig> = {}): BaseConfig => BaseSchema.parse({source, ...more})

function assertUserError(error: unknown, code: string, exitCode: number, ...words: string[]): true {
  assert.ok(error instanceof UserError, `expected a UserError, got ${String(error)}`)
  assert.equal(error.code, code)
  assert.equal(error.exitCode, exitCode)
  for (const w of words) assert.ok(error.message.includes(w), `message "${error.message}" should name ${w}`)
  return true
}

function images(n: number, seed = 1): tf.Tensor4D {
  return tf.randomUniform([n, 16, 16, 3], 0, 1, 'float32', seed) as tf.Tensor4D
}

async function maxDiff(a: tf.Tensor | Float32Array, b: tf.Tensor | Float32Array): Promise<number> {
  const x = a instanceof tf.Tensor ? await a.data() : a
  const y = b instanceof tf.Tensor ? await b.data() : b
  assert.equal(x.length, y.length)
  let max = 0
  for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i]! - y[i]!))
  return max
}

describe('pretrained bases', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let layersDir: string
  let graphDir: string
  let server: StaticServer

  before(async () => {
    await initEngine('cpu')
    ;({dir, cleanup} = await tempDir())
    layersDir = await writeTinyBase(path.join(dir, 'site', 'tiny'))
    graphDir = await writeTinyGraphBase(path.join(dir, 'site', 'graph'))
    server = await serveFolder(path.join(dir, 'site'))
  })
  after(async () => {
    await server.close()
    await cleanup()
  })

  it('cuts at the last pooled layer by default, at a named layer on request', async () => {
    const auto = await loadBase(base(layersDir), IMAGE)
    assert.equal(auto.output, 'features')
    assert.equal(auto.featureSize, 8)
    assert.deepEqual(auto.inputShape, [16, 16, 3])
    const reference = tinyBase()
    const expected = tf.model({inputs: reference.inputs, outputs: reference.getLayer('features').output as tf.SymbolicTensor})
    const x = images(3)
    // Same seed, same weights: the cut model is the reference network up to "features".
    assert.ok((await maxDiff(auto.extract(x), expected.predict(x) as tf.Tensor)) < 1e-5)

    const named = await loadBase(base(layersDir, {output: 'block_add'}), IMAGE)
    assert.equal(named.output, 'block_add')
    // A spatial cut is average-pooled to one vector per image: here the same as the "pool" layer.
    assert.ok((await maxDiff(named.extract(x), auto.extract(x))) < 1e-5)

    await assert.rejects(loadBase(base(layersDir, {output: 'nope'}), IMAGE), (e) => assertUserError(e, 'BASE_OUTPUT_NOT_FOUND', 2, 'nope'))
  })

  it('refuses a base whose input size does not match data.image, naming both', async () => {
    await assert.rejects(loadBase(base(layersDir), {height: 28, width: 28, channels: 1, fit: 'fill'}), (e) =>
      assertUserError(e, 'BASE_INPUT_MISMATCH', 2, '16x16x3', '28x28x1'),
    )
    await assert.rejects(loadBase(base(layersDir, {inputSize: [32, 32]}), IMAGE), (e) => assertUserError(e, 'BASE_INPUT_MISMATCH', 2, '16x16x3'))
  })

  it('freezes the base by default and unfreezes exactly the top N layers with weights', async () => {
    const frozen = await loadBase(base(layersDir), IMAGE)
    assert.deepEqual(frozen.features!.trainableWeights, [])
    const top2 = await loadBase(base(layersDir, {trainable: 2}), IMAGE)
    const weighted = weightedLayers(top2.features!.layers).map((l) => l.name)
    assert.deepEqual(weighted, ['stem_conv', 'stem_bn', 'block_dw', 'block_dw_bn', 'block_project', 'block_project_bn'])
    assert.deepEqual(
      top2.features!.layers.filter((l) => l.trainable && l.weights.length).map((l) => l.name),
      ['block_project', 'block_project_bn'],
    )
    const all = await loadBase(base(layersDir, {trainable: true}), IMAGE)
    assert.equal(all.features!.layers.filter((l) => l.trainable && l.weights.length).length, 6)
  })

  it('downloads a base once into the cache; later loads are cache hits', async () => {
    const cacheRoot = path.join(dir, 'cache-hit')
    const url = `${server.url}/tiny/model.json`
    const first = await fetchBase(url, {cacheRoot})
    assert.equal(first.downloaded, true)
    const requests = server.requests.length
    assert.ok(server.requests.includes('/tiny/weights.bin'))
    const local = await fetchBase(layersDir)
    assert.equal(first.sha256, local.sha256, 'the downloaded files are the served ones')
    const second = await fetchBase(url, {cacheRoot, sha256: local.sha256})
    assert.equal(second.downloaded, false)
    assert.equal(server.requests.length, requests, 'a cache hit makes no request')
    const loaded = await loadBase(base(url, {sha256: local.sha256}), IMAGE, {cacheRoot})
    assert.equal(loaded.sha256, local.sha256)
  })

  it('refuses a download that does not match its pin and leaves no cache entry', async () => {
    const cacheRoot = path.join(dir, 'cache-pin')
    const wrong = '0'.repeat(64)
    await assert.rejects(fetchBase(`${server.url}/tiny/model.json`, {cacheRoot, sha256: wrong}), (e) => assertUserError(e, 'BASE_PIN_MISMATCH', 3, wrong))
    assert.deepEqual(await readdir(path.join(cacheRoot)).catch(() => []), [])
    // A local source is checked against its pin too.
    await assert.rejects(loadBase(base(layersDir, {sha256: wrong}), IMAGE), (e) => assertUserError(e, 'BASE_PIN_MISMATCH', 3))
  })

  it('reports a failed download (exit 5) and leaves no half-written cache entry', async () => {
    const cacheRoot = path.join(dir, 'cache-fail')
    server.failing.add('/tiny/weights.bin')
    try {
      await assert.rejects(fetchBase(`${server.url}/tiny/model.json`, {cacheRoot}), (e) => assertUserError(e, 'BASE_DOWNLOAD_FAILED', 5, 'weights.bin', '500'))
    } finally {
      server.failing.delete('/tiny/weights.bin')
    }
    const entries = await readdir(path.join(cacheRoot, 'bases')).catch(() => [])
    assert.deepEqual(entries, [], `cache holds ${entries.join(', ')}`)
  })

  it('uses a graph model as a frozen feature extractor, at its output or a named node', async () => {
    const url = `${server.url}/graph/model.json`
    const graph = await loadBase(base(url), IMAGE, {cacheRoot: path.join(dir, 'cache-graph')})
    assert.equal(graph.kind, 'graph')
    assert.equal(graph.featureSize, 4)
    const x = images(2)
    const features = graph.extract(x)
    assert.deepEqual(features.shape, [2, 4])
    // Reference: relu(x . kernel) averaged over the image, computed directly.
    const kernel = tf.tensor4d(Float32Array.from({length: 12}, (_, i) => ((i * 7) % 5) / 5 - 0.4), [1, 1, 3, 4])
    const expected = tf.mean(tf.relu(tf.conv2d(x, kernel, 1, 'valid')), [1, 2])
    assert.ok((await maxDiff(features, expected)) < 1e-5)
    const atRelu = await loadBase(base(graphDir, {output: 'relu'}), IMAGE)
    assert.ok((await maxDiff(atRelu.extract(x), expected)) < 1e-5)
    await assert.rejects(loadBase(base(graphDir, {trainable: true}), IMAGE), (e) => assertUserError(e, 'BASE_NOT_TRAINABLE', 2))
  })

  it('builds base + head as one graph that saves, loads and exports to ONNX equal within 1e-4', async () => {
    const loaded = await loadBase(base(layersDir, {inputRange: [-1, 1], trainable: 2}), IMAGE)
    const transfer = buildTransferModel(loaded, HeadSchema.parse({hidden: [6], dropout: 0.1}), 3, 42)
    const x = images(4, 9)
    // The input range is part of the graph: features of x equal the cut base's on 2x - 1.
    const direct = loaded.features!.predict(tf.sub(tf.mul(x, 2), 1)) as tf.Tensor
    assert.ok((await maxDiff(transfer.features.predict(x) as tf.Tensor, direct)) < 1e-5)
    const whole = transfer.model.predict(x) as tf.Tensor
    assert.ok((await maxDiff(whole, transfer.head.predict(transfer.features.predict(x) as tf.Tensor) as tf.Tensor)) < 1e-6)

    const saved = path.join(dir, 'transfer-model')
    await saveModel(transfer.model, saved)
    const back = await loadModel(saved)
    assert.ok((await maxDiff(back.predict(x) as tf.Tensor, whole)) < 1e-6)
    const split = splitTransferModel(back)
    assert.equal(split.featureSize, 8)
    assert.deepEqual(
      split.baseLayers.filter((l) => l.trainable && l.weights.length).map((l) => l.name),
      ['block_project', 'block_project_bn'],
      'which base layers train survives save and load',
    )
    assert.deepEqual(setBaseTrainable(split, false), [])
    assert.equal(split.model.trainableWeights.length, 4, 'a frozen base leaves the two dense layers of the head')

    const files = await serialiseModel(back)
    const onnx = convertToOnnx({modelJson: files.modelJson as unknown as ModelJson, weights: files.weights, name: 'transfer', producerVersion: 'test', metadata: {}})
    const session = await ort.InferenceSession.create(onnx)
    const out = await session.run({image: new ort.Tensor('float32', (await x.data()) as Float32Array, [4, 16, 16, 3])})
    const diff = await maxDiff(out.probabilities!.data as Float32Array, whole)
    assert.ok(diff < 1e-4, `ONNX differs from tfjs by ${diff}`)
    await session.release()
  })
})
