// Depthwise convolution gradients for the wasm backend (which has none), written as XNNPACK
// depthwise convolutions: the gradient of a per-channel correlation is again per channel.
import type {BackendWasm} from '@tensorflow/tfjs-backend-wasm'
import {checkShape, filterGradPadAfter, flipFilter, inputGradMargins, spreadGradient} from './conv2d-backprop.js'
import {
  alloc, assertChannelsLast, callKernel, convInfo, explicitPad, free, heap, transpose, view,
  type Conv2DInfo, type KernelArgs, type TensorInfo,
} from './wasm-util.js'

function depthwiseBackpropFilter({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const {x, dy} = inputs as {x: TensorInfo, dy: TensorInfo}
  assertChannelsLast('DepthwiseConv2dNativeBackpropFilter', attrs.dataFormat)
  const info = convInfo(x.shape, attrs.filterShape as number[], attrs, true)
  // No formulation reaches XNNPACK's GEMM here: the one below runs its depthwise kernel with a
  // filter as large as the image, which loses to a plain loop when each channel has one filter.
  if (info.outChannels === info.inChannels) return filterGradByLoop(backend, x, dy, info)
  return filterGradByDepthwise(backend, x, dy, info)
}

/**
 * Folding the batch into the channels turns the per-image correlations into one depthwise
 * convolution (x by dy); the batch sum is then a cheap pass over a tiny [KH, KW, B, C*M] result.
 */
function filterGradByDepthwise(backend: BackendWasm, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const {batchSize, inHeight, inWidth, outHeight, outWidth, filterHeight, filterWidth, inChannels, outChannels} = info
  const {strideHeight, strideWidth, dilationHeight, dilationWidth} = info
  const multiplier = outChannels / inChannels
  const {top, left} = info.padInfo
  const bottom = filterGradPadAfter(inHeight, top, outHeight, filterHeight, strideHeight, dilationHeight)
  const right = filterGradPadAfter(inWidth, left, outWidth, filterWidth, strideWidth, dilationWidth)

  const xT = batchSize === 1 ? undefined : transpose(backend, x, [1, 2, 0, 3])
  const dyT = batchSize === 1 ? undefined : transpose(backend, dy, [1, 2, 0, 3])
  const grad = callKernel(backend, 'DepthwiseConv2dNative', {
    x: view(xT ?? x, [1, inHeight, inWidth, batchSize * inChannels]),
    filter: view(dyT ?? dy, [outHeight, outWidth, batchSize * inChannels, multiplier]),
  }, {
    strides: [dilationHeight, dilationWidth],
    dilations: [strideHeight, strideWidth],
    pad: explicitPad(top, bottom, left, right),
  })
  free(backend, xT, dyT)

  const dW = alloc(backend, [filterHeight, filterWidth, inChannels, multiplier])
  const src = heap(backend, grad)
  const dst = heap(backend, dW)
  const gradWidth = grad.shape[2]!
  const perImage = outChannels
  for (let i = 0; i < filterHeight; i++) {
    for (let j = 0; j < filterWidth; j++) {
      const from = (i * gradWidth + j) * batchSize * perImage
      const to = (i * filterWidth + j) * perImage
      dst.set(src.subarray(from, from + perImage), to)
      for (let b = 1; b < batchSize; b++) {
        const offset = from + b * perImage
        for (let c = 0; c < perImage; c++) dst[to + c] += src[offset + c]!
      }
    }
  }
  free(backend, grad)
  return dW
}

/**
 * dW[kh, kw, c] = sum over images and output pixels of x * dy, for a channel multiplier of 1.
 * Four output columns are combined before each accumulator update, which would otherwise chain
 * every multiply-add on the one before it.
 */
function filterGradByLoop(backend: BackendWasm, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const {batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth, filterHeight, filterWidth} = info
  const {strideHeight, strideWidth, dilationHeight, dilationWidth} = info
  const {top, left} = info.padInfo
  const dW = alloc(backend, [filterHeight, filterWidth, channels, 1])
  const xs = heap(backend, x)
  const dys = heap(backend, dy)
  const acc = new Float64Array(filterHeight * filterWidth * channels)
  const xStep = strideWidth * channels
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      const dyRow = (b * outHeight + oh) * outWidth * channels
      for (let kh = 0; kh < filterHeight; kh++) {
        const ih = oh * strideHeight + kh * dilationHeight - top
        if (ih < 0 || ih >= inHeight) continue
        const xRow = (b * inHeight + ih) * inWidth * channels
        for (let kw = 0; kw < filterWidth; kw++) {
          // Output columns whose tap kw lands inside the image: [first, end).
          const shift = kw * dilationWidth - left
          const first = Math.max(0, Math.ceil(-shift / strideWidth))
          const end = Math.min(outWidth, Math.ceil((inWidth - shift) / strideWidth))
          const a = (kh * filterWidth + kw) * channels
          let ow = first
          let p = xRow + (first * strideWidth + shift) * channels
          let q = dyRow + first * channels
          for (; ow + 4 <= end; ow += 4, p += 4 * xStep, q += 4 * channels) {
            const p1 = p + xStep
            const p2 = p1 + xStep
            const p3 = p2 + xStep
            const q1 = q + channels
            const q2 = q1 + channels
            const q3 = q2 + channels
            for (let c = 0; c < channels; c++) {
              acc[a + c] += (xs[p + c]! * dys[q + c]! + xs[p1 + c]! * dys[q1 + c]!) +
                (xs[p2 + c]! * dys[q2 + c]! + xs[p3 + c]! * dys[q3 + c]!)
            }
          }
          for (; ow < end; ow++, p += xStep, q += channels) {
            for (let c = 0; c < channels; c++) acc[a + c] += xs[p + c]! * dys[q + c]!
          }
        }
      }
    }
  }
  heap(backend, dW).set(acc)
  return dW
}

function depthwiseBackpropInput({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const {dy, filter} = inputs as {dy: TensorInfo, filter: TensorInfo}
  assertChannelsLast('DepthwiseConv2dNativeBackpropInput', attrs.dataFormat)
  const inputShape = attrs.inputShape as number[]
  const info = convInfo(inputShape, filter.shape, attrs, true)
  const {batchSize, inHeight, inWidth, inChannels, outChannels, filterHeight, filterWidth} = info
  const multiplier = outChannels / inChannels
  const margins = inputGradMargins(
    inHeight, inWidth, info.outHeight, info.outWidth,
    info.effectiveFilterHeight, info.effectiveFilterWidth, info.strideHeight, info.strideWidth,
    info.padInfo.top, info.padInfo.left,
  )
  const {u, owned} = spreadGradient(backend, dy, info.strideHeight, info.strideWidth, margins)
  // Each of the C*M output channels flows back through its own flipped tap; the M channels
  // that came from one input channel are then summed.
  const flipped = flipFilter(backend, filter, false)
  const perChannel = callKernel(backend, 'DepthwiseConv2dNative', {
    x: u,
    filter: view(flipped, [filterHeight, filterWidth, outChannels, 1]),
  }, {
    strides: [1, 1],
    dilations: [info.dilationHeight, info.dilationWidth],
    pad: explicitPad(
      Math.max(0, margins.top), Math.max(0, margins.bottom), Math.max(0, margins.left), Math.max(0, margins.right),
    ),
  })
  free(backend, flipped, owned ? u : undefined)
  checkShape('DepthwiseConv2dNativeBackpropInput', perChannel, [batchSize, inHeight, inWidth, outChannels])
  if (multiplier === 1) return perChannel
  const pixels = batchSize * inHeight * inWidth * inChannels
  const summed = callKernel(backend, 'Sum', {x: view(perChannel, [pixels, multiplier])}, {axis: [1], keepDims: false})
  free(backend, perChannel)
  return {dataId: summed.dataId, shape: inputShape, dtype: summed.dtype}
}

export const depthwiseBackpropFilterConfig = {
  kernelName: 'DepthwiseConv2dNativeBackpropFilter',
  backendName: 'wasm',
  kernelFunc: depthwiseBackpropFilter,
} as const

export const depthwiseBackpropInputConfig = {
  kernelName: 'DepthwiseConv2dNativeBackpropInput',
  backendName: 'wasm',
  kernelFunc: depthwiseBackpropInput,
} as const
