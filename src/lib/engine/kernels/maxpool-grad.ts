// MaxPoolGrad for the wasm backend as one pass over the wasm heap: several times faster than the
// stock kernel, and with the cpu backend's rule that a window's gradient goes to its first maximum.
import * as tf from '../tf.js'
import {
  alloc, assertChannelsLast, heap, pair, type KernelArgs, type PadAttr, type RoundingMode, type TensorInfo,
} from './wasm-util.js'

function maxPoolGrad({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const {dy, input: x} = inputs as {dy: TensorInfo, input: TensorInfo}
  assertChannelsLast('MaxPoolGrad', attrs.dataFormat)
  const info = tf.backend_util.computePool2DInfo(
    x.shape as [number, number, number, number],
    pair(attrs.filterSize, 1),
    pair(attrs.strides, 1),
    1,
    attrs.pad as PadAttr,
    attrs.dimRoundingMode as RoundingMode,
  )
  const {batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth} = info
  const {strideHeight, strideWidth, filterHeight, filterWidth} = info
  const padTop = info.padInfo.top
  const padLeft = info.padInfo.left

  const dx = alloc(backend, x.shape)
  const xs = heap(backend, x)
  const dys = heap(backend, dy)
  const out = heap(backend, dx)
  out.fill(0)
  // Overlapping windows can route several gradients to one pixel: sum those in double precision
  // as the cpu backend does, so that results do not depend on the order of accumulation.
  const overlapping = strideHeight < filterHeight || strideWidth < filterWidth
  const acc: Float32Array | Float64Array = overlapping ? new Float64Array(out.length) : out

  const rowStride = inWidth * channels
  const imageStride = inHeight * rowStride
  let g = 0
  for (let b = 0; b < batchSize; b++) {
    const image = b * imageStride
    for (let oh = 0; oh < outHeight; oh++) {
      const top = oh * strideHeight - padTop
      const rowStart = Math.max(0, top)
      const rowEnd = Math.min(inHeight, top + filterHeight)
      for (let ow = 0; ow < outWidth; ow++) {
        const left = ow * strideWidth - padLeft
        const colStart = Math.max(0, left)
        const colEnd = Math.min(inWidth, left + filterWidth)
        const corner = image + rowStart * rowStride + colStart * channels
        const rows = rowEnd - rowStart
        const cols = colEnd - colStart
        if (rows === 2 && cols === 2) {
          for (let ch = 0; ch < channels; ch++, g++) {
            const p0 = corner + ch
            const p2 = p0 + rowStride
            const a0 = xs[p0]!
            const a1 = xs[p0 + channels]!
            const a2 = xs[p2]!
            const a3 = xs[p2 + channels]!
            // The common 2x2 window without branches, which random data mispredicts half the time:
            // strict comparisons keep the first maximum in row-major order. A NaN or -Infinity
            // anywhere in the window (the sum is then not above -Infinity) takes the exact scan.
            if ((a0 + a1) + (a2 + a3) > -Infinity) {
              const right01 = Number(a1 > a0) * channels
              const right23 = Number(a3 > a2) * channels
              const lower = Number(xs[p2 + right23]! > xs[p0 + right01]!)
              acc[p0 + right01 + lower * (rowStride + right23 - right01)] += dys[g]!
              continue
            }
            const at = firstMax(xs, p0, 2, 2, rowStride, channels)
            if (at >= 0) acc[at] += dys[g]!
          }
          continue
        }
        for (let ch = 0; ch < channels; ch++, g++) {
          const at = firstMax(xs, corner + ch, rows, cols, rowStride, channels)
          if (at >= 0) acc[at] += dys[g]!
        }
      }
    }
  }
  if (overlapping) out.set(acc)
  return dx
}

/**
 * Index of the first maximum of a window in row-major order, as the cpu backend finds it: a strict
 * comparison from -Infinity, so NaN never wins and a window of NaN or -Infinity has none (-1).
 */
function firstMax(xs: Float32Array, corner: number, rows: number, cols: number, rowStride: number, step: number): number {
  let best = -Infinity
  let at = -1
  for (let r = 0, row = corner; r < rows; r++, row += rowStride) {
    for (let c = 0, p = row; c < cols; c++, p += step) {
      const v = xs[p]!
      if (v > best) {
        best = v
        at = p
      }
    }
  }
  return at
}

export const maxPoolGradConfig = {
  kernelName: 'MaxPoolGrad',
  backendName: 'wasm',
  kernelFunc: maxPoolGrad,
} as const
