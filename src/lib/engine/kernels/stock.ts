// The wasm backend's own kernels as they were before we replaced any, so that a replacement can
// hand the cases it does not speed up back to the original.
import * as tf from '../tf.js'
import type {KernelArgs, TensorInfo} from './wasm-util.js'

const originals = new Map<string, tf.KernelFunc>()
const setups = new Map<string, tf.KernelSetupFunc>()

/** Remembers the stock kernel of that name; a no-op once remembered, so re-registration is safe. */
export function rememberStock(kernelName: string): void {
  if (originals.has(kernelName)) return
  const kernel = tf.getKernel(kernelName, 'wasm')
  if (kernel === undefined) return
  originals.set(kernelName, kernel.kernelFunc)
  if (kernel.setupFunc !== undefined) setups.set(kernelName, kernel.setupFunc)
}

/**
 * The stock kernel's setup (it binds the C++ function once the wasm module exists): a replacement
 * that delegates must keep it, or a backend initialised after the swap would never run it.
 */
export function stockSetup(kernelName: string): tf.KernelSetupFunc | undefined {
  return setups.get(kernelName)
}

export function callStock(kernelName: string, args: KernelArgs): TensorInfo {
  const kernelFunc = originals.get(kernelName)
  if (kernelFunc === undefined) throw new Error(`the wasm backend has no stock ${kernelName} kernel to fall back on`)
  const out = kernelFunc({inputs: args.inputs, backend: args.backend, attrs: args.attrs as tf.NamedAttrMap})
  if (Array.isArray(out)) throw new Error(`stock wasm kernel ${kernelName} returned several tensors, one was expected`)
  return out
}
