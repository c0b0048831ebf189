import assert from 'node:assert/strict'
import {before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import * as ort from 'onnxruntime-node'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {convertToOnnx} from '../../../src/lib/export/onnx.js'
import type {ModelJson} from '../../../src/lib/export/quantize.js'
import {serialiseModel} from '../../../src/lib/model/artifact.js'
import {buildModel} from '../../../src/lib/model/build.js'
import {bytesPerExample, microBatchFor} from '../../../src/lib/train/replica.js'
import {validateConfig} from '../../../src/lib/config/load.js'

describe('default preset', () => {
  const config = (image: object, model?: object) => validateConfig({data: {sources: [{type: 'folder', path: './images'}], image}, ...(model ? {model} : {})})

  it('is chosen by data.image when model gives none: cnn-photo from 96 px, cnn-small below', () => {
    assert.equal(config({width: 224, height: 224, channels: 3}).model.preset, 'cnn-photo')
    assert.equal(config({width: 96, height: 128, channels: 3}).model.preset, 'cnn-photo')
    assert.equal(config({width: 128, height: 95, channels: 3}).model.preset, 'cnn-small')
    assert.equal(config({width: 28, height: 28, channels: 1}).model.preset, 'cnn-small')
  })

  it('leaves a chosen preset, a layer list or a base alone', () => {
    assert.equal(config({width: 224, height: 224, channels: 3}, {preset: 'cnn'}).model.preset, 'cnn')
    const layers = config({width: 224, height: 224, channels: 3}, {layers: [{type: 'flatten'}]}).model
    assert.equal(layers.preset, undefined)
    assert.equal(config({width: 224, height: 224, channels: 3}, {base: {source: './base'}}).model.preset, undefined)
  })
})

describe('photo-size preset', () => {
  before(() => initEngine('cpu'))

  it('cnn-photo keeps 224x224 activations small (strided stem, global pooling) and exports to ONNX', async () => {
    const image = {height: 224, width: 224, channels: 3 as const, fit: 'fill' as const}
    const photo = buildModel({preset: 'cnn-photo'}, image, 4, 1)
    const digits = buildModel({preset: 'cnn'}, image, 4, 1)
    assert.deepEqual(photo.outputs[0]!.shape, [null, 4])
    // The digits preset at photo size needs several times the memory per example.
    assert.ok(bytesPerExample(digits) > 8 * bytesPerExample(photo), `cnn ${bytesPerExample(digits)} vs cnn-photo ${bytesPerExample(photo)} bytes`)
    assert.ok(microBatchFor(photo) >= 64, `micro-batch ${microBatchFor(photo)}`)
    const x = tf.randomUniform([2, 224, 224, 3], 0, 1, 'float32', 4)
    const expected = (await (photo.predict(x) as tf.Tensor).data()) as Float32Array
    const files = await serialiseModel(photo)
    const session = await ort.InferenceSession.create(convertToOnnx({modelJson: files.modelJson as unknown as ModelJson, weights: files.weights, name: 'p', producerVersion: 't', metadata: {}}))
    const out = (await session.run({image: new ort.Tensor('float32', (await x.data()) as Float32Array, [2, 224, 224, 3])})).probabilities!.data as Float32Array
    assert.ok(out.every((v, i) => Math.abs(v - expected[i]!) < 1e-4))
    await session.release()
    photo.dispose()
    digits.dispose()
  })
})
