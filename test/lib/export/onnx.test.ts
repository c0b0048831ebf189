// The ONNX converter checked by onnxruntime-node against TensorFlow.js itself: every preset, custom
// layer lists, a functional graph and quantized weights, on real MNIST test digits.
import assert from 'node:assert/strict'
import {before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import onnxProto from 'onnx-proto'
import type {ImageSpec, ModelConfig} from '../../../src/lib/config/schema.js'
import {readMnist} from '../../../src/lib/data/mnist.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {convertToOnnx, ONNX_OPSET, readOnnxInfo, SUPPORTED_LAYERS} from '../../../src/lib/export/onnx.js'
import {createOnnxSession, maxAbsDiff, runOnnx} from '../../../src/lib/export/onnx-runtime.js'
import {quantizeArtifacts, type ModelJson} from '../../../src/lib/export/quantize.js'
import {buildModel} from '../../../src/lib/model/build.js'
import {serialiseModel} from '../../../src/lib/model/artifact.js'
import {UserError} from '../../../src/lib/errors.js'

const IMAGE: ImageSpec = {width: 28, height: 28, channels: 1, fit: 'fill'}
const N = 64
let images: Float32Array

/** Seeded, non-trivial values for every weight: biases and batch-norm statistics far from 0 and 1. */
function seedWeights(model: tf.LayersModel, seed: number): void {
  let i = 0
  // Per layer: model.weights lists trainable weights first, which is not the order setWeights takes.
  for (const layer of model.layers) {
    const values = layer.weights.map((w) => {
      const shape = w.shape as number[]
      const s = seed * 1000 + i++
      // Variable names get _1, _2... when a layer name repeats across models; originalName does not.
      const name = w.originalName
      if (/moving_variance$/.test(name)) return tf.randomUniform(shape, 0.2, 2, 'float32', s)
      if (/gamma$/.test(name)) return tf.randomUniform(shape, 0.5, 1.5, 'float32', s)
      if (/(beta|moving_mean)$/.test(name)) return tf.randomUniform(shape, -0.5, 0.5, 'float32', s)
      if (/bias$/.test(name)) return tf.randomUniform(shape, -0.1, 0.1, 'float32', s)
      const fanIn = shape.slice(0, -1).reduce((a, b) => a * b, 1)
      return tf.randomUniform(shape, -Math.sqrt(6 / fanIn), Math.sqrt(6 / fanIn), 'float32', s)
    })
    if (values.length) layer.setWeights(values)
    values.forEach((v) => v.dispose())
  }
}

async function toOnnx(model: tf.LayersModel, quantize?: 'float16' | 'uint8'): Promise<{bytes: Uint8Array; modelJson: ModelJson; weights: Uint8Array}> {
  const files = await serialiseModel(model)
  let modelJson = files.modelJson as unknown as ModelJson
  let weights = files.weights
  if (quantize) ({modelJson, weights} = quantizeArtifacts(modelJson, weights, quantize))
  const bytes = convertToOnnx({modelJson, weights, name: 'test', producerVersion: '0.0.0', metadata: {labels: '["a"]'}})
  return {bytes, modelJson, weights}
}

function tfjsPredict(model: tf.LayersModel, x: Float32Array, n: number, shape = [28, 28, 1]): Float32Array {
  return tf.tidy(() => (model.predict(tf.tensor(x, [n, ...shape])) as tf.Tensor).dataSync() as Float32Array)
}

async function onnxPredict(bytes: Uint8Array, x: Float32Array, n: number, shape = [28, 28, 1]): Promise<Float32Array> {
  const session = await createOnnxSession(bytes)
  try {
    return await runOnnx(session, x, [n, shape[0]!, shape[1]!, shape[2]!])
  } finally {
    await session.release()
  }
}

/** Largest change of any probability between the first image and the others. */
function spread(p: Float32Array, k: number): number {
  let max = 0
  for (let i = 1; i < p.length / k; i++) for (let c = 0; c < k; c++) max = Math.max(max, Math.abs(p[i * k + c]! - p[c]!))
  return max
}

async function assertSame(model: tf.LayersModel, label: string): Promise<void> {
  const {bytes} = await toOnnx(model)
  const expected = tfjsPredict(model, images, N)
  const actual = await onnxPredict(bytes, images, N)
  assert.equal(actual.length, expected.length)
  const diff = maxAbsDiff(actual, expected)
  assert.ok(diff <= 1e-4, `${label}: ONNX differs from tfjs by ${diff}`)
  // A model that answers the same for every image would make the comparison meaningless.
  assert.ok(spread(expected, 10) > 5e-3, `${label}: the test model ignores its input (spread ${spread(expected, 10)})`)
}

before(async () => {
  await initEngine('wasm')
  const sample = await readMnist('test', 0, N)
  images = Float32Array.from(sample.pixels, (p) => p / 255)
})

describe('ONNX export of the presets', () => {
  for (const preset of ['mlp', 'cnn-tiny', 'cnn-small', 'cnn'] as const) {
    it(`${preset}: onnxruntime gives the tfjs probabilities within 1e-4`, async () => {
      const model = buildModel({preset}, IMAGE, 10, 11)
      seedWeights(model, 1)
      await assertSame(model, preset)
      model.dispose()
    })
  }
})

describe('ONNX export of layer lists', () => {
  const lists: Record<string, ModelConfig['layers']> = {
    'depthwise + separable + average pooling + global max pooling + reshape': [
      {type: 'conv2d', filters: 4, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu6'},
      {type: 'depthwiseConv2d', kernelSize: 3, depthMultiplier: 2, padding: 'same', activation: 'elu'},
      {type: 'separableConv2d', filters: 6, kernelSize: 3, strides: 2, padding: 'same', activation: 'swish'},
      {type: 'averagePooling2d', poolSize: 3, strides: 2, padding: 'same'},
      {type: 'batchNormalization'},
      {type: 'reshape', targetShape: [2, 8, 6]},
      {type: 'globalMaxPooling2d'},
      {type: 'dense', units: 16, activation: 'selu'},
      {type: 'dropout', rate: 0.3},
    ],
    'padding, dilation, odd strides and activation layers': [
      {type: 'zeroPadding2d', padding: 1},
      {type: 'conv2d', filters: 3, kernelSize: 5, strides: 3, activation: 'tanh'},
      {type: 'reLU', maxValue: 0.5},
      {type: 'maxPooling2d', poolSize: 3, strides: 2, padding: 'same'},
      {type: 'conv2d', filters: 5, kernelSize: 3, dilationRate: 2, padding: 'same'},
      {type: 'leakyReLU', alpha: 0.1},
      {type: 'activation', activation: 'softplus'},
      {type: 'separableConv2d', filters: 4, kernelSize: 2, depthMultiplier: 3, padding: 'valid', activation: 'mish'},
      {type: 'globalAveragePooling2d'},
      {type: 'dense', units: 12},
      {type: 'batchNormalization'},
      {type: 'dense', units: 8, activation: 'gelu'},
    ],
    'dense on an image tensor, flatten after it, squashing activations': [
      {type: 'maxPooling2d', poolSize: 4},
      {type: 'dense', units: 3, activation: 'softsign'},
      {type: 'flatten'},
      {type: 'elu'},
      {type: 'dense', units: 16, activation: 'hardSigmoid'},
      {type: 'dense', units: 9, activation: 'sigmoid'},
    ],
    'rescaling, softmax over channels inside the network, thresholded relu, logSoftmax': [
      {type: 'rescaling', scale: 2, offset: -1},
      {type: 'conv2d', filters: 4, kernelSize: 3, activation: 'gelu_new'},
      {type: 'softmax', axis: -1},
      {type: 'thresholdedReLU', theta: 0.2},
      {type: 'conv2d', filters: 3, kernelSize: 3, strides: 2, padding: 'same', activation: 'logSoftmax'},
      {type: 'maxPooling2d', poolSize: 2},
      {type: 'flatten'},
    ],
  }
  for (const [name, layers] of Object.entries(lists)) {
    it(`${name}: onnxruntime gives the tfjs probabilities within 1e-4`, async () => {
      const model = buildModel({layers}, IMAGE, 10, 5)
      seedWeights(model, 2)
      await assertSame(model, name)
      model.dispose()
    })
  }
})

describe('ONNX export of a functional graph', () => {
  it('Add, Concatenate, Multiply, Average, Maximum and Minimum with mixed layouts', async () => {
    const input = tf.input({shape: [28, 28, 1], name: 'image'})
    const a = tf.layers.conv2d({filters: 4, kernelSize: 3, padding: 'same', activation: 'relu', name: 'branch_a'}).apply(input) as tf.SymbolicTensor
    const b = tf.layers.conv2d({filters: 4, kernelSize: 1, name: 'branch_b'}).apply(input) as tf.SymbolicTensor
    const sum = tf.layers.add({name: 'sum'}).apply([a, b]) as tf.SymbolicTensor
    // The raw input (NHWC) meets a convolution output (NCHW inside): the converter must transpose one.
    const joined = tf.layers.concatenate({name: 'joined'}).apply([sum, input, a]) as tf.SymbolicTensor
    const pooled = tf.layers.maxPooling2d({poolSize: 2, name: 'pooled'}).apply(joined) as tf.SymbolicTensor
    const c = tf.layers.conv2d({filters: 9, kernelSize: 3, padding: 'same', name: 'branch_c'}).apply(pooled) as tf.SymbolicTensor
    const d = tf.layers.conv2d({filters: 9, kernelSize: 3, padding: 'same', name: 'branch_d'}).apply(pooled) as tf.SymbolicTensor
    const product = tf.layers.multiply({name: 'product'}).apply([c, d]) as tf.SymbolicTensor
    const mean = tf.layers.average({name: 'mean'}).apply([c, d, product]) as tf.SymbolicTensor
    const low = tf.layers.minimum({name: 'low'}).apply([c, d]) as tf.SymbolicTensor
    const max = tf.layers.maximum({name: 'max'}).apply([mean, pooled, low]) as tf.SymbolicTensor
    const flat = tf.layers.flatten({name: 'flat'}).apply(max) as tf.SymbolicTensor
    const out = tf.layers.dense({units: 10, activation: 'softmax', name: 'probabilities'}).apply(flat) as tf.SymbolicTensor
    const model = tf.model({inputs: input, outputs: out})
    seedWeights(model, 3)
    await assertSame(model, 'functional')
    model.dispose()
  })
})

describe('ONNX graph properties', () => {
  it('states opset, producer, NHWC input with a dynamic batch, output and metadata', async () => {
    const model = buildModel({preset: 'cnn-tiny'}, IMAGE, 10, 1)
    const {bytes} = await toOnnx(model)
    const info = readOnnxInfo(bytes)
    assert.equal(info.opset, ONNX_OPSET)
    assert.ok(ONNX_OPSET >= 13)
    assert.equal(info.producer, 'ml')
    assert.deepEqual(info.input, {name: 'image', dims: ['batch', 28, 28, 1]})
    assert.deepEqual(info.output, {name: 'probabilities', dims: ['batch', 10]})
    assert.equal(info.metadata.labels, '["a"]')
    // The same file serves batches of any size.
    for (const n of [1, 7]) {
      const p = await onnxPredict(bytes, images.subarray(0, n * 784), n)
      assert.equal(p.length, n * 10)
      assert.ok(maxAbsDiff(p, tfjsPredict(model, images.subarray(0, n * 784), n)) <= 1e-4)
    }
    // Same input, same bytes: nothing time- or run-dependent goes into the file.
    assert.deepEqual((await toOnnx(model)).bytes, bytes)
    model.dispose()
  })

  it('refuses an unsupported layer with a UserError naming its class and name', async () => {
    const model = buildModel({layers: [{type: 'upSampling2d', size: [2, 2], name: 'grow'}, {type: 'flatten'}]}, IMAGE, 10, 1)
    await assert.rejects(toOnnx(model), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'EXPORT_UNSUPPORTED_LAYER')
      assert.match(error.message, /"grow" \(UpSampling2D\)/)
      // The supported list comes from the converter table: every converted class is in it.
      for (const name of ['SpatialDropout2D', 'Subtract', 'ReLU', 'DepthwiseConv2D', 'ZeroPadding2D', 'Rescaling']) {
        assert.ok(SUPPORTED_LAYERS.includes(name), `${name} missing from SUPPORTED_LAYERS`)
        assert.ok(error.suggestions.some((s) => s.includes(name)), `${name} missing from the suggestion`)
      }
      return true
    })
    model.dispose()
  })
})

describe('quantized ONNX', () => {
  for (const mode of ['uint8', 'float16'] as const) {
    it(`${mode}: onnxruntime decodes the weights exactly as tf.io.decodeWeights does`, async () => {
      const model = buildModel({preset: 'cnn'}, IMAGE, 10, 4)
      seedWeights(model, 4)
      const plain = await toOnnx(model)
      const q = await toOnnx(model, mode)
      // The tfjs model loaded from the quantized files is the reference.
      const decoded = await tf.loadLayersModel(
        tf.io.fromMemory({modelTopology: q.modelJson.modelTopology as object, weightSpecs: q.modelJson.weightsManifest[0]!.weights as tf.io.WeightsManifestEntry[], weightData: q.weights.slice().buffer}),
      )
      const expected = tfjsPredict(decoded, images, N)
      const actual = await onnxPredict(q.bytes, images, N)
      const diff = maxAbsDiff(actual, expected)
      assert.ok(diff <= 1e-4, `quantized ONNX differs from quantized tfjs by ${diff}`)
      assert.ok(q.bytes.byteLength < plain.bytes.byteLength * (mode === 'uint8' ? 0.4 : 0.6), `${mode}: ${q.bytes.byteLength} vs ${plain.bytes.byteLength} bytes`)
      const graph = onnxProto.onnx.ModelProto.decode(q.bytes).graph!
      const ops = new Set((graph.node ?? []).map((n) => n.opType))
      assert.ok(ops.has('Cast'))
      assert.ok((graph.initializer ?? []).some((t) => t.dataType === (mode === 'uint8' ? 2 : 10)))
      decoded.dispose()
      model.dispose()
    })
  }
})
