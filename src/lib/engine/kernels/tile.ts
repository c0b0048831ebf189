// Tile for wasm as block copies: the stock kernel walks every output element and was the largest
// cost of a batch-norm backward pass (tfjs-core's batchNorm gradient tiles per-channel factors).
import type {TensorInfo} from '../tf.js'
import type {KernelArgs} from './wasm-util.js'

type Typed = Float32Array | Int32Array | Uint8Array

/** Tiles `src` (row-major, `shape`) by `reps`, one axis at a time from the innermost. */
export function tileArray(src: Typed, shape: number[], reps: number[]): Typed {
  let current = src
  const dims = [...shape]
  for (let axis = dims.length - 1; axis >= 0; axis--) {
    const r = reps[axis]!
    if (r === 1) continue
    let inner = 1
    for (let k = axis; k < dims.length; k++) inner *= dims[k]!
    const outer = inner === 0 ? 0 : current.length / inner
    const next = new (current.constructor as new (n: number) => Typed)(current.length * r)
    for (let o = 0; o < outer; o++) {
      const block = current.subarray(o * inner, (o + 1) * inner)
      for (let i = 0; i < r; i++) next.set(block, (o * r + i) * inner)
    }
    dims[axis] = dims[axis]! * r
    current = next
  }
  return current
}

function tile({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const x = inputs.x!
  const reps = attrs.reps as number[]
  if (x.dtype === 'string') throw new Error('Tile: string tensors are not supported by this kernel')
  const outShape = x.shape.map((d, i) => d * reps[i]!)
  const src = backend.readSync(x.dataId) as Typed
  const tiled = tileArray(src, x.shape, reps)
  const out = backend.makeOutput(outShape, x.dtype)
  ;(backend.typedArrayFromHeap(out) as Typed).set(tiled)
  return out
}

export const tileConfig = {kernelName: 'Tile', backendName: 'wasm', kernelFunc: tile} as const
