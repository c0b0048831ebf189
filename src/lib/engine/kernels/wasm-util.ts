// Plumbing for building wasm kernels out of the wasm backend's own kernels: calling a registered
// kernel directly, reading and writing tensors in the wasm heap, and freeing intermediates.
import * as tf from '../tf.js'
import type {BackendWasm} from '@tensorflow/tfjs-backend-wasm'

export type TensorInfo = tf.TensorInfo
export type Conv2DInfo = tf.backend_util.Conv2DInfo
export type PadAttr = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding
export type RoundingMode = 'floor' | 'round' | 'ceil' | undefined

/** What a kernel function receives; attrs are typed loosely because each kernel reads its own. */
export interface KernelArgs {
  inputs: Record<string, TensorInfo>
  backend: BackendWasm
  attrs: Record<string, unknown>
}

/**
 * Runs a kernel registered for the wasm backend without going through the engine, so that the
 * result is an untracked intermediate: the caller must free it (or return it as its output).
 */
export function callKernel(
  backend: BackendWasm,
  name: string,
  inputs: Record<string, TensorInfo>,
  attrs: Record<string, unknown> = {},
): TensorInfo {
  const kernel = tf.getKernel(name, 'wasm')
  if (kernel === undefined) throw new Error(`wasm backend has no ${name} kernel`)
  const out = kernel.kernelFunc({inputs, backend, attrs: attrs as tf.NamedAttrMap})
  if (Array.isArray(out)) throw new Error(`wasm kernel ${name} returned several tensors, one was expected`)
  return out
}

/** Frees intermediates made by {@link callKernel} or {@link alloc}. */
export function free(backend: BackendWasm, ...infos: Array<TensorInfo | undefined>): void {
  for (const info of infos) if (info !== undefined) backend.disposeData(info.dataId)
}

/**
 * The same data under another shape (a reshape without the reference count): only valid while
 * `info` lives, and never to be freed on its own.
 */
export function view(info: TensorInfo, shape: number[]): TensorInfo {
  return {dataId: info.dataId, shape, dtype: info.dtype}
}

export function alloc(backend: BackendWasm, shape: number[]): TensorInfo {
  return backend.makeOutput(shape, 'float32')
}

/**
 * A Float32Array over a tensor's bytes in the wasm heap. Every allocation can grow (and so
 * detach) the heap, so take views only after the last alloc and use them at once.
 */
export function heap(backend: BackendWasm, info: TensorInfo): Float32Array {
  return backend.typedArrayFromHeap(info) as Float32Array
}

export function transpose(backend: BackendWasm, x: TensorInfo, perm: number[]): TensorInfo {
  return callKernel(backend, 'Transpose', {x}, {perm})
}

/** Copies out the window [begin, begin + size) of a rank-4 tensor. */
export function slice4d(backend: BackendWasm, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const out = alloc(backend, size)
  const src = heap(backend, x)
  const dst = heap(backend, out)
  const [, s1, s2, s3] = x.shape as [number, number, number, number]
  const rowStride = s2 * s3
  const imageStride = s1 * rowStride
  const run = size[2]! * s3
  let o = 0
  for (let a = 0; a < size[0]!; a++) {
    for (let b = 0; b < size[1]!; b++) {
      const start = (begin[0]! + a) * imageStride + (begin[1]! + b) * rowStride + begin[2]! * s3 + begin[3]!
      if (size[3] === s3) {
        dst.set(src.subarray(start, start + run), o)
        o += run
      } else {
        for (let c = 0; c < size[2]!; c++) {
          const p = start + c * s3
          dst.set(src.subarray(p, p + size[3]!), o)
          o += size[3]!
        }
      }
    }
  }
  return out
}

/** Fails clearly on NCHW, which none of the wasm convolution kernels implement. */
export function assertChannelsLast(kernel: string, dataFormat: unknown): void {
  if (dataFormat !== undefined && dataFormat !== 'NHWC' && dataFormat !== 'channelsLast') {
    const got = String(dataFormat)
    throw new Error(`${kernel} on the wasm backend supports only NHWC (channels last) data, got dataFormat '${got}'`)
  }
}

export function pair(value: unknown, fallback: number): [number, number] {
  if (value === undefined || value === null) return [fallback, fallback]
  if (typeof value === 'number') return [value, value]
  const list = value as number[]
  return [list[0]!, list[1] ?? list[0]!]
}

/** Conv geometry as tfjs computes it, so that padding and rounding agree with every other backend. */
export function convInfo(
  xShape: number[],
  filterShape: number[],
  attrs: Record<string, unknown>,
  depthwise: boolean,
): Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    pair(attrs.strides, 1),
    pair(attrs.dilations, 1),
    attrs.pad as PadAttr,
    attrs.dimRoundingMode as RoundingMode,
    depthwise,
    'channelsLast',
  )
}

/** Explicit padding in the tfjs layout [[0, 0], [top, bottom], [left, right], [0, 0]]. */
export function explicitPad(top: number, bottom: number, left: number, right: number): tf.backend_util.ExplicitPadding {
  return [[0, 0], [top, bottom], [left, right], [0, 0]]
}
