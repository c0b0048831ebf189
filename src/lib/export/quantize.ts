// Weight quantization stored the way tfjs-converter stores it (float16, or affine uint8 with min and
// scale in the weightsManifest), so tf.io.decodeWeights dequantizes on load and ONNX can reuse it.
import {UserError} from '../errors.js'

export const QUANTIZE_MODES = ['none', 'float16', 'uint8'] as const
export type QuantizeMode = (typeof QUANTIZE_MODES)[number]

export interface Quantization {
  dtype: 'uint8' | 'uint16' | 'float16'
  min?: number
  scale?: number
  original_dtype?: string
}

export interface WeightEntry {
  name: string
  shape: number[]
  dtype: string
  quantization?: Quantization
}

export interface ModelJson {
  modelTopology: unknown
  weightsManifest: Array<{paths: string[]; weights: WeightEntry[]}>
  [key: string]: unknown
}

/** One weight as stored: its manifest entry and its bytes in the storage dtype. */
export interface StoredWeight {
  entry: WeightEntry
  bytes: Uint8Array
}

const STORAGE_BYTES: Record<string, number> = {float32: 4, int32: 4, uint8: 1, uint16: 2, float16: 2, bool: 1}

export function storageBytes(entry: WeightEntry): number {
  const per = STORAGE_BYTES[entry.quantization?.dtype ?? entry.dtype]
  if (per === undefined) throw new UserError(`weight ${entry.name} has dtype ${entry.dtype}, which ml cannot export`, {code: 'EXPORT_UNSUPPORTED_WEIGHT', exit: 'data'})
  return per * entry.shape.reduce((a, b) => a * b, 1)
}

/** Splits weights.bin into the weights the manifest lists, in manifest order. */
export function splitWeights(modelJson: ModelJson, weights: Uint8Array): StoredWeight[] {
  const out: StoredWeight[] = []
  let offset = 0
  for (const group of modelJson.weightsManifest) {
    for (const entry of group.weights) {
      const size = storageBytes(entry)
      if (offset + size > weights.byteLength) {
        throw new UserError(`weights.bin is shorter than its manifest says (weight ${entry.name})`, {code: 'MODEL_CORRUPT', exit: 'data'})
      }
      out.push({entry, bytes: weights.slice(offset, offset + size)})
      offset += size
    }
  }
  return out
}

/**
 * Only kernels (rank 2 and up) are quantized: biases and batch-norm statistics are a tiny share of
 * the bytes, and rounding a small moving variance to 0 would blow activations up.
 */
export function quantizable(entry: WeightEntry): boolean {
  return entry.dtype === 'float32' && entry.quantization === undefined && entry.shape.length >= 2
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** float32 -> IEEE half bits, rounding to nearest even (overflow goes to infinity). */
export function toFloat16(value: number): number {
  f32[0] = value
  const x = u32[0]!
  const sign = (x >>> 16) & 0x8000
  const exp = (x >>> 23) & 0xff
  let mant = x & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0)
  const e = exp - 127 + 15
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    mant |= 0x800000
    const shift = 14 - e
    let half = mant >>> shift
    const rem = mant & ((1 << shift) - 1)
    const halfway = 1 << (shift - 1)
    if (rem > halfway || (rem === halfway && half & 1)) half++
    return sign | half
  }
  let half = (e << 10) | (mant >>> 13)
  const rem = mant & 0x1fff
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++
  return sign | half
}

export interface Uint8Quantized {
  values: Uint8Array
  scale: number
  min: number
  zeroPoint: number
}

/**
 * Affine uint8 quantization with 0 exactly representable: value = q * scale + min where
 * min = -zeroPoint * scale, so tfjs (q * scale + min) and ONNX DequantizeLinear ((q - zeroPoint) *
 * scale) decode to the same float32 numbers.
 */
export function quantizeUint8(values: Float32Array): Uint8Quantized {
  let lo = 0
  let hi = 0
  for (const v of values) {
    if (v < lo) lo = v
    if (v > hi) hi = v
  }
  const scale = Math.fround((hi - lo) / 255)
  const out = new Uint8Array(values.length)
  if (!(scale > 0) || !Number.isFinite(scale)) return {values: out, scale: 1, min: 0, zeroPoint: 0}
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)))
  for (let i = 0; i < values.length; i++) out[i] = Math.min(255, Math.max(0, Math.round(values[i]! / scale) + zeroPoint))
  return {values: out, scale, min: -zeroPoint * scale, zeroPoint}
}

function float32View(bytes: Uint8Array): Float32Array {
  const copy = new Uint8Array(bytes)
  return new Float32Array(copy.buffer, 0, copy.byteLength / 4)
}

export interface QuantizedArtifacts {
  modelJson: ModelJson
  weights: Uint8Array
  /** Names of the weights that were quantized. */
  quantized: string[]
}

/** Rewrites model.json + weights.bin with kernels stored as float16 or uint8. */
export function quantizeArtifacts(modelJson: ModelJson, weights: Uint8Array, mode: Exclude<QuantizeMode, 'none'>): QuantizedArtifacts {
  const stored = splitWeights(modelJson, weights)
  const entries: WeightEntry[] = []
  const chunks: Uint8Array[] = []
  const quantized: string[] = []
  for (const {entry, bytes} of stored) {
    if (!quantizable(entry)) {
      entries.push(entry)
      chunks.push(bytes)
      continue
    }
    const values = float32View(bytes)
    quantized.push(entry.name)
    if (mode === 'float16') {
      const half = new Uint16Array(values.length)
      for (let i = 0; i < values.length; i++) half[i] = toFloat16(values[i]!)
      entries.push({...entry, quantization: {dtype: 'float16', original_dtype: 'float32'}})
      chunks.push(new Uint8Array(half.buffer))
    } else {
      const q = quantizeUint8(values)
      entries.push({...entry, quantization: {dtype: 'uint8', min: q.min, scale: q.scale, original_dtype: 'float32'}})
      chunks.push(q.values)
    }
  }
  const total = chunks.reduce((n, c) => n + c.byteLength, 0)
  const out = new Uint8Array(total)
  let offset = 0
  for (const c of chunks) {
    out.set(c, offset)
    offset += c.byteLength
  }
  // One weights file, whatever the source had: the export writes exactly weights.bin.
  return {modelJson: {...modelJson, weightsManifest: [{paths: ['weights.bin'], weights: entries}]}, weights: out, quantized}
}
