// Faster wasm versions of three generic kernels that dominate a training step once convolutions
// are fast: BatchMatMul with a transposed operand, Sum over leading axes (bias gradients), Identity.
import * as tf from '../tf.js'
import {callStock} from './stock.js'
import {alloc, free, heap, transpose, type KernelArgs, type TensorInfo} from './wasm-util.js'

/**
 * The stock kernel runs XNNPACK only for unbatched products without transposes and falls back to a
 * scalar triple loop otherwise, which is what every dense-layer gradient (dy x W^T, x^T x dy)
 * needs. Transposing the operand first costs a copy and keeps XNNPACK.
 */
function batchMatMul(args: KernelArgs): TensorInfo {
  const {a, b} = args.inputs as {a: TensorInfo, b: TensorInfo}
  const transposeA = args.attrs.transposeA === true
  const transposeB = args.attrs.transposeB === true
  const unbatched = a.shape.slice(0, -2).every((d) => d === 1) && b.shape.slice(0, -2).every((d) => d === 1)
  if ((!transposeA && !transposeB) || !unbatched || a.dtype !== 'float32' || b.dtype !== 'float32') {
    return callStock('BatchMatMul', args)
  }
  const a2 = transposeA ? transpose(args.backend, matrix(a), [1, 0]) : undefined
  const b2 = transposeB ? transpose(args.backend, matrix(b), [1, 0]) : undefined
  const out = callStock('BatchMatMul', {
    inputs: {a: a2 ?? a, b: b2 ?? b},
    backend: args.backend,
    attrs: {...args.attrs, transposeA: false, transposeB: false},
  })
  free(args.backend, a2, b2)
  const rank = Math.max(a.shape.length, b.shape.length)
  const rows = out.shape[out.shape.length - 2]!
  const cols = out.shape[out.shape.length - 1]!
  return {dataId: out.dataId, shape: [...new Array<number>(rank - 2).fill(1), rows, cols], dtype: out.dtype}
}

function matrix(info: TensorInfo): TensorInfo {
  const rows = info.shape[info.shape.length - 2]!
  const cols = info.shape[info.shape.length - 1]!
  return {dataId: info.dataId, shape: [rows, cols], dtype: info.dtype}
}

/**
 * Reducing leading axes (a bias gradient sums [B, H, W, C] to [C]) makes the stock kernel transpose
 * the whole tensor first; one streaming pass adds the rows instead, in double precision.
 */
function sum(args: KernelArgs): TensorInfo {
  const {x} = args.inputs as {x: TensorInfo}
  const rank = x.shape.length
  if (x.dtype !== 'float32' || rank < 2) return callStock('Sum', args)
  const axes = tf.util.parseAxisParam(args.attrs.axis as number | number[], x.shape).sort((p, q) => p - q)
  const leading = axes.length > 0 && axes.length < rank && axes.every((axis, i) => axis === i)
  if (!leading) return callStock('Sum', args)
  const rows = x.shape.slice(0, axes.length).reduce((p, d) => p * d, 1)
  const kept = x.shape.slice(axes.length)
  const width = kept.reduce((p, d) => p * d, 1)
  if (rows === 0 || width === 0) return callStock('Sum', args)

  const out = alloc(args.backend, kept)
  const src = heap(args.backend, x)
  heap(args.backend, out).set(sumRows(src, rows, width))
  const shape = args.attrs.keepDims === true ? x.shape.map((d, i) => (i < axes.length ? 1 : d)) : kept
  return {dataId: out.dataId, shape, dtype: 'float32'}
}

/**
 * Column sums of a row-major [rows, width] matrix. Eight rows per pass: adding into the
 * accumulator once per row would serialise every add on the one before it.
 */
export function sumRows(src: Float32Array, rows: number, width: number): Float64Array {
  const acc = new Float64Array(width)
  const w = width
  const end = rows * width
  let o = 0
  for (; o + 8 * w <= end; o += 8 * w) {
    for (let c = 0; c < w; c++) {
      const p = o + c
      acc[c] += ((src[p]! + src[p + w]!) + (src[p + 2 * w]! + src[p + 3 * w]!)) +
        ((src[p + 4 * w]! + src[p + 5 * w]!) + (src[p + 6 * w]! + src[p + 7 * w]!))
    }
  }
  for (; o < end; o += w) {
    for (let c = 0; c < w; c++) acc[c] += src[o + c]!
  }
  return acc
}

/**
 * The engine clones every tensor a gradient will need, and the stock kernel copies the bytes each
 * time. Tensors are immutable, so sharing the buffer under a reference count (as Reshape and the
 * cpu backend's Identity already do) is equivalent and free.
 */
function identity(args: KernelArgs): TensorInfo {
  const {x} = args.inputs as {x: TensorInfo}
  if (x.dtype === 'string') return callStock('Identity', args)
  args.backend.incRef(x.dataId)
  return {dataId: x.dataId, shape: x.shape, dtype: x.dtype}
}

export const batchMatMulConfig = {kernelName: 'BatchMatMul', backendName: 'wasm', kernelFunc: batchMatMul} as const
export const sumConfig = {kernelName: 'Sum', backendName: 'wasm', kernelFunc: sum} as const
export const identityConfig = {kernelName: 'Identity', backendName: 'wasm', kernelFunc: identity} as const
