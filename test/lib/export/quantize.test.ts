// Weight quantization: float16 rounding, affine uint8 with an exact zero, and manifests that
// TensorFlow.js's own decodeWeights turns back into the expected float32 values.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {quantizable, quantizeArtifacts, quantizeUint8, splitWeights, toFloat16, type ModelJson} from '../../../src/lib/export/quantize.js'
import {rngFor} from '../../../src/lib/train/rng.js'

function decodeHalf(bits: number): number {
  return tf.io.decodeWeights(new Uint16Array([bits]).buffer, [{name: 'x', shape: [1], dtype: 'float32', quantization: {dtype: 'float16'}}]).x!.dataSync()[0]!
}

function manifest(entries: Array<{name: string; shape: number[]}>): ModelJson {
  return {modelTopology: {}, weightsManifest: [{paths: ['weights.bin'], weights: entries.map((e) => ({...e, dtype: 'float32'}))}]}
}

function bytesOf(arrays: Float32Array[]): Uint8Array {
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.byteLength, 0))
  let offset = 0
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), offset)
    offset += a.byteLength
  }
  return out
}

describe('float16', () => {
  it('rounds to the nearest half (ties to even), keeps signs, subnormals, infinities and NaN', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65520, 0x7c00], // rounds up past the largest half
      [1e9, 0x7c00],
      [Number.POSITIVE_INFINITY, 0x7c00],
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // halfway to zero: ties to even
      [3 * 2 ** -25, 0x0002],
      [2 ** -14, 0x0400], // smallest normal
      [1 + 2 ** -11, 0x3c00], // halfway, even below
      [1 + 3 * 2 ** -11, 0x3c02], // halfway, even above
    ]
    for (const [value, bits] of cases) assert.equal(toFloat16(value), bits, `toFloat16(${value})`)
    assert.equal(toFloat16(Number.NaN) & 0x7c00, 0x7c00)
    assert.notEqual(toFloat16(Number.NaN) & 0x3ff, 0)
  })

  it('decodes (with tfjs) to within half a unit in the last place', () => {
    const rng = rngFor(1, 'float16')
    for (let i = 0; i < 2000; i++) {
      const v = Math.fround((rng() - 0.5) * 2 ** Math.floor(rng() * 30 - 20))
      const back = decodeHalf(toFloat16(v))
      const ulp = 2 ** (Math.max(Math.floor(Math.log2(Math.abs(v) || 2 ** -24)), -14) - 10)
      assert.ok(Math.abs(back - v) <= ulp / 2 + 1e-30, `${v} -> ${back}`)
    }
  })
})

describe('uint8', () => {
  it('keeps 0 exact, errs by at most half a step and handles constant tensors', () => {
    const rng = rngFor(2, 'uint8')
    const values = Float32Array.from({length: 1000}, () => rng() * 3 - 1)
    values[17] = 0
    const q = quantizeUint8(values)
    assert.equal(q.min, -q.zeroPoint * q.scale)
    for (let i = 0; i < values.length; i++) {
      const back = Math.fround(q.values[i]! * q.scale + q.min)
      assert.ok(Math.abs(back - values[i]!) <= q.scale / 2 + 1e-6, `value ${values[i]} -> ${back}`)
    }
    assert.equal(q.values[17]! * q.scale + q.min, 0)
    // Positive-only (variances) and constant tensors.
    const positive = quantizeUint8(Float32Array.of(0.5, 1, 2))
    assert.equal(positive.zeroPoint, 0)
    assert.ok(Math.abs(positive.values[2]! * positive.scale - 2) < 1e-6)
    assert.deepEqual(Array.from(quantizeUint8(new Float32Array(4)).values), [0, 0, 0, 0])
  })
})

describe('quantizeArtifacts', () => {
  for (const mode of ['uint8', 'float16'] as const) {
    it(`${mode}: quantizes kernels only, and tf.io.decodeWeights restores them`, () => {
      const rng = rngFor(3, mode)
      const kernel = Float32Array.from({length: 3 * 3 * 2 * 4}, () => rng() - 0.5)
      const bias = Float32Array.from({length: 4}, () => rng())
      const variance = Float32Array.from({length: 4}, () => rng() * 1e-3)
      const json = manifest([
        {name: 'conv/kernel', shape: [3, 3, 2, 4]},
        {name: 'conv/bias', shape: [4]},
        {name: 'bn/moving_variance', shape: [4]},
      ])
      const q = quantizeArtifacts(json, bytesOf([kernel, bias, variance]), mode)
      assert.deepEqual(q.quantized, ['conv/kernel'])
      const [k, b, v] = q.modelJson.weightsManifest[0]!.weights
      assert.equal(k!.quantization!.dtype, mode)
      assert.equal(k!.quantization!.original_dtype, 'float32')
      if (mode === 'uint8') assert.equal(typeof k!.quantization!.scale, 'number')
      assert.equal(b!.quantization, undefined)
      assert.equal(v!.quantization, undefined)
      assert.equal(q.weights.byteLength, kernel.length * (mode === 'uint8' ? 1 : 2) + 8 * 4)
      const decoded = tf.io.decodeWeights(q.weights.slice().buffer, q.modelJson.weightsManifest[0]!.weights as tf.io.WeightsManifestEntry[])
      const dk = decoded['conv/kernel']!.dataSync()
      const tolerance = mode === 'uint8' ? 1 / 255 : 1e-3
      for (let i = 0; i < kernel.length; i++) assert.ok(Math.abs(dk[i]! - kernel[i]!) <= tolerance, `kernel[${i}]`)
      assert.deepEqual(Array.from(decoded['conv/bias']!.dataSync()), Array.from(bias))
      assert.deepEqual(Array.from(decoded['bn/moving_variance']!.dataSync()), Array.from(variance))
      tf.dispose(Object.values(decoded))
    })
  }

  it('splits weights.bin by the manifest and refuses a short file', () => {
    const json = manifest([{name: 'a', shape: [2, 2]}, {name: 'b', shape: [3]}])
    const parts = splitWeights(json, new Uint8Array(28))
    assert.deepEqual(parts.map((p) => p.bytes.byteLength), [16, 12])
    assert.throws(() => splitWeights(json, new Uint8Array(20)), /shorter than its manifest/)
    assert.equal(quantizable({name: 'x', shape: [4], dtype: 'float32'}), false)
    assert.equal(quantizable({name: 'x', shape: [4, 4], dtype: 'int32'}), false)
  })
})
