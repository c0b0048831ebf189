// Installs the training kernels the wasm backend lacks (or runs slowly) so that CNNs train on it;
// the engine calls this once it has chosen wasm.
import * as tf from '../tf.js'
import {conv2DBackpropFilterConfig, conv2DBackpropInputConfig} from './conv2d-backprop.js'
import {batchMatMulConfig, identityConfig, sumConfig} from './dense-ops.js'
import {depthwiseBackpropFilterConfig, depthwiseBackpropInputConfig} from './depthwise-backprop.js'
import {maxPoolGradConfig} from './maxpool-grad.js'
import {rememberStock, stockSetup} from './stock.js'
import {tileConfig} from './tile.js'
import type {KernelArgs} from './wasm-util.js'

interface OwnKernel {
  kernelName: string
  backendName: 'wasm'
  kernelFunc: (args: KernelArgs) => tf.TensorInfo
}

const KERNELS: OwnKernel[] = [
  conv2DBackpropFilterConfig,
  conv2DBackpropInputConfig,
  depthwiseBackpropFilterConfig,
  depthwiseBackpropInputConfig,
  maxPoolGradConfig,
  batchMatMulConfig,
  sumConfig,
  identityConfig,
  tileConfig,
]

/** Names of the kernels {@link registerWasmTrainingKernels} installs for 'wasm'. */
export const WASM_TRAINING_KERNELS: readonly string[] = KERNELS.map((k) => k.kernelName)

/**
 * Registers our wasm kernels, replacing stock ones of the same name. Idempotent: kernels
 * already installed are left alone, so calling it again (or from several modules) is harmless.
 */
export function registerWasmTrainingKernels(): void {
  for (const kernel of KERNELS) {
    const kernelFunc = kernel.kernelFunc as unknown as tf.KernelFunc
    const current = tf.getKernel(kernel.kernelName, 'wasm')
    if (current?.kernelFunc === kernelFunc) continue
    rememberStock(kernel.kernelName)
    if (current !== undefined) tf.unregisterKernel(kernel.kernelName, 'wasm')
    const setupFunc = stockSetup(kernel.kernelName)
    tf.registerKernel({kernelName: kernel.kernelName, backendName: 'wasm', kernelFunc, setupFunc})
  }
}

