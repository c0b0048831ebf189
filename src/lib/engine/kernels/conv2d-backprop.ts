// Conv2D gradients for the wasm backend, written as forward convolutions so that XNNPACK's fast
// Conv2D does the arithmetic: the stock backend has no filter gradient and a slow input gradient.
import type {BackendWasm} from '@tensorflow/tfjs-backend-wasm'
import {
  alloc, assertChannelsLast, callKernel, convInfo, explicitPad, free, heap, slice4d, transpose, view,
  type Conv2DInfo, type KernelArgs, type TensorInfo,
} from './wasm-util.js'

/** How far a gradient convolution must pad (positive) or crop (negative) each side of its input. */
export interface Margins {
  top: number
  bottom: number
  left: number
  right: number
}

/**
 * Geometry of the input gradient as a stride-1 convolution over dy spread out by the forward
 * strides: dx[i] = sum_k u[i + k * dilation - before] * flipped[k], where u holds dy[o] at o * stride.
 */
export function inputGradMargins(
  inHeight: number, inWidth: number, outHeight: number, outWidth: number,
  effFilterHeight: number, effFilterWidth: number, strideHeight: number, strideWidth: number,
  padTop: number, padLeft: number,
): Margins {
  return {
    top: effFilterHeight - 1 - padTop,
    // Rows of u past inHeight - 1 + padTop feed no dx row: a negative margin crops them.
    bottom: inHeight - 1 + padTop - (outHeight - 1) * strideHeight,
    left: effFilterWidth - 1 - padLeft,
    right: inWidth - 1 + padLeft - (outWidth - 1) * strideWidth,
  }
}

/**
 * Spreads dy [B, OH, OW, C] to u with zeros between rows and columns (the forward strides) and
 * crops whatever a negative margin drops. Returns dy itself when there is nothing to do.
 */
export function spreadGradient(
  backend: BackendWasm, dy: TensorInfo, strideHeight: number, strideWidth: number, margins: Margins,
): {u: TensorInfo, owned: boolean} {
  const [batch, outHeight, outWidth, channels] = dy.shape as [number, number, number, number]
  const cropTop = Math.max(0, -margins.top)
  const cropBottom = Math.max(0, -margins.bottom)
  const cropLeft = Math.max(0, -margins.left)
  const cropRight = Math.max(0, -margins.right)
  const fullHeight = (outHeight - 1) * strideHeight + 1
  const fullWidth = (outWidth - 1) * strideWidth + 1
  if (strideHeight === 1 && strideWidth === 1 && cropTop + cropBottom + cropLeft + cropRight === 0) {
    return {u: dy, owned: false}
  }
  const height = Math.max(0, fullHeight - cropTop - cropBottom)
  const width = Math.max(0, fullWidth - cropLeft - cropRight)
  const u = alloc(backend, [batch, height, width, channels])
  const src = heap(backend, dy)
  const dst = heap(backend, u)
  if (strideHeight !== 1 || strideWidth !== 1) dst.fill(0)
  for (let b = 0; b < batch; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      const row = oh * strideHeight - cropTop
      if (row < 0 || row >= height) continue
      for (let ow = 0; ow < outWidth; ow++) {
        const col = ow * strideWidth - cropLeft
        if (col < 0 || col >= width) continue
        const from = ((b * outHeight + oh) * outWidth + ow) * channels
        dst.set(src.subarray(from, from + channels), ((b * height + row) * width + col) * channels)
      }
    }
  }
  return {u, owned: true}
}

/**
 * The filter rotated by 180 degrees in space, with its two channel axes swapped when `swap`:
 * [KH, KW, A, B] -> [KH, KW, B, A] (or [KH, KW, A, B] unswapped).
 */
export function flipFilter(backend: BackendWasm, filter: TensorInfo, swap: boolean): TensorInfo {
  const [kh, kw, a, b] = filter.shape as [number, number, number, number]
  const out = alloc(backend, swap ? [kh, kw, b, a] : [kh, kw, a, b])
  const src = heap(backend, filter)
  const dst = heap(backend, out)
  const plane = a * b
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      const from = ((kh - 1 - i) * kw + (kw - 1 - j)) * plane
      const to = (i * kw + j) * plane
      if (!swap) {
        dst.set(src.subarray(from, from + plane), to)
        continue
      }
      for (let p = 0; p < a; p++) {
        for (let q = 0; q < b; q++) dst[to + q * a + p] = src[from + p * b + q]!
      }
    }
  }
  return out
}

/**
 * How much to pad after the input of a filter-gradient convolution (input x, filter dy, stride =
 * forward dilation, dilation = forward stride) so that it yields at least `filterSize` outputs.
 */
export function filterGradPadAfter(
  inSize: number, padBefore: number, outSize: number, filterSize: number, stride: number, dilation: number,
): number {
  const needed = (filterSize - 1) * dilation + (outSize - 1) * stride + 1
  return Math.max(0, needed - inSize - padBefore)
}

function conv2DBackpropFilter({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const {x, dy} = inputs as {x: TensorInfo, dy: TensorInfo}
  assertChannelsLast('Conv2DBackpropFilter', attrs.dataFormat)
  const info = convInfo(x.shape, attrs.filterShape as number[], attrs, false)
  // Whichever way it is done, XNNPACK repacks one operand of the product in every call, at a cost
  // that dominates small layers: pack the patches of x when they are smaller than dy.
  const patchWidth = info.filterHeight * info.filterWidth * info.inChannels
  if (patchWidth < info.outChannels) return filterGradByPatches(backend, x, dy, info)
  return filterGradByConv(backend, x, dy, info)
}

/**
 * dW as one convolution: x's channels become the batch and the batch becomes the reduced channel
 * axis, so that XNNPACK convolves x by dy (stride := dilation, dilation := stride).
 */
function filterGradByConv(backend: BackendWasm, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const {filterHeight, filterWidth, inChannels, outChannels} = info
  const {strideHeight, strideWidth, dilationHeight, dilationWidth} = info
  const {top, left} = info.padInfo
  const bottom = filterGradPadAfter(info.inHeight, top, info.outHeight, filterHeight, strideHeight, dilationHeight)
  const right = filterGradPadAfter(info.inWidth, left, info.outWidth, filterWidth, strideWidth, dilationWidth)
  const xT = transpose(backend, x, [3, 1, 2, 0])
  const dyT = transpose(backend, dy, [1, 2, 0, 3])
  const grad = callKernel(backend, 'Conv2D', {x: xT, filter: dyT}, {
    strides: [dilationHeight, dilationWidth],
    dilations: [strideHeight, strideWidth],
    pad: explicitPad(top, bottom, left, right),
    dataFormat: 'NHWC',
  })
  free(backend, xT, dyT)
  let cropped = grad
  if (grad.shape[1] !== filterHeight || grad.shape[2] !== filterWidth) {
    cropped = slice4d(backend, grad, [0, 0, 0, 0], [inChannels, filterHeight, filterWidth, outChannels])
    free(backend, grad)
  }
  const dW = transpose(backend, cropped, [1, 2, 0, 3])
  free(backend, cropped)
  return dW
}

/** dW^T = dy^T x patches(x), with the (small) patch matrix as XNNPACK's packed operand. */
function filterGradByPatches(backend: BackendWasm, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const {batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth} = info
  const {strideHeight, strideWidth, dilationHeight, dilationWidth} = info
  const {top, left} = info.padInfo
  const rows = batchSize * outHeight * outWidth
  const width = filterHeight * filterWidth * inChannels
  const patches = alloc(backend, [rows, width])
  const xs = heap(backend, x)
  const ps = heap(backend, patches)
  let p = 0
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      for (let ow = 0; ow < outWidth; ow++) {
        for (let kh = 0; kh < filterHeight; kh++) {
          const ih = oh * strideHeight + kh * dilationHeight - top
          for (let kw = 0; kw < filterWidth; kw++, p += inChannels) {
            const iw = ow * strideWidth + kw * dilationWidth - left
            if (ih < 0 || ih >= inHeight || iw < 0 || iw >= inWidth) {
              ps.fill(0, p, p + inChannels)
              continue
            }
            const from = ((b * inHeight + ih) * inWidth + iw) * inChannels
            for (let c = 0; c < inChannels; c++) ps[p + c] = xs[from + c]!
          }
        }
      }
    }
  }
  const dyT = transpose(backend, view(dy, [rows, outChannels]), [1, 0])
  const product = callKernel(backend, 'BatchMatMul', {
    a: view(dyT, [1, outChannels, rows]),
    b: view(patches, [1, rows, width]),
  }, {transposeA: false, transposeB: false})
  free(backend, dyT, patches)
  const dW = transpose(backend, view(product, [outChannels, width]), [1, 0])
  free(backend, product)
  return view(dW, [filterHeight, filterWidth, inChannels, outChannels])
}

function conv2DBackpropInput({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const {dy, filter} = inputs as {dy: TensorInfo, filter: TensorInfo}
  assertChannelsLast('Conv2DBackpropInput', attrs.dataFormat)
  const inputShape = attrs.inputShape as number[]
  const info = convInfo(inputShape, filter.shape, attrs, false)
  const margins = inputGradMargins(
    info.inHeight, info.inWidth, info.outHeight, info.outWidth,
    info.effectiveFilterHeight, info.effectiveFilterWidth, info.strideHeight, info.strideWidth,
    info.padInfo.top, info.padInfo.left,
  )
  const {u, owned} = spreadGradient(backend, dy, info.strideHeight, info.strideWidth, margins)
  const flipped = flipFilter(backend, filter, true)
  const dx = callKernel(backend, 'Conv2D', {x: u, filter: flipped}, {
    strides: [1, 1],
    dilations: [info.dilationHeight, info.dilationWidth],
    pad: explicitPad(
      Math.max(0, margins.top), Math.max(0, margins.bottom), Math.max(0, margins.left), Math.max(0, margins.right),
    ),
    dataFormat: 'NHWC',
  })
  free(backend, flipped, owned ? u : undefined)
  checkShape('Conv2DBackpropInput', dx, inputShape)
  return dx
}

export function checkShape(kernel: string, got: TensorInfo, want: number[]): void {
  if (got.shape.length !== want.length || got.shape.some((d, i) => d !== want[i])) {
    throw new Error(`${kernel} (wasm): computed shape [${got.shape.join(', ')}], expected [${want.join(', ')}]`)
  }
}

export const conv2DBackpropFilterConfig = {
  kernelName: 'Conv2DBackpropFilter',
  backendName: 'wasm',
  kernelFunc: conv2DBackpropFilter,
} as const

export const conv2DBackpropInputConfig = {
  kernelName: 'Conv2DBackpropInput',
  backendName: 'wasm',
  kernelFunc: conv2DBackpropInput,
} as const
