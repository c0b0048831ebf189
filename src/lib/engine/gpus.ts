// Whether a process may run TensorFlow on a GPU: the engine's answer for callers that must prepare
// for it before any backend is loaded (data-parallel training pins one GPU per worker process).
import {createRequire} from 'node:module'
import type {EnginePreference} from './backend.js'

/** True when the optional @tensorflow/tfjs-node-gpu package is installed. */
export function hasTfjsNodeGpu(): boolean {
  try {
    createRequire(import.meta.url).resolve('@tensorflow/tfjs-node-gpu')
    return true
  } catch {
    return false
  }
}

/**
 * True when a backend chosen under `preference` may be the GPU one: the wasm and cpu preferences
 * never load native TensorFlow, auto and tensorflow do when tfjs-node-gpu is installed.
 */
export function mayUseGpu(preference: EnginePreference): boolean {
  return preference !== 'wasm' && preference !== 'cpu' && hasTfjsNodeGpu()
}
