// Chooses the TensorFlow.js backend for the whole process (native TensorFlow, wasm or pure JS):
// the only place that does, so that every other module can simply import './tf.js'.
import {createRequire} from 'node:module'
import * as tf from './tf.js'
import '@tensorflow/tfjs-backend-wasm'
import {UserError} from '../errors.js'
import {registerWasmTrainingKernels} from './kernels/index.js'

export type EnginePreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu'
export type EngineBackend = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu'

export interface EngineInfo {
  /** What runs the maths, as reported to users. */
  backend: EngineBackend
  /** The name TensorFlow.js knows the backend by (tf.getBackend()). */
  tfBackendName: string
  /** The preference initEngine was called with. */
  requested: string
  /** Why this backend and not a faster one, and what to install to get one. */
  notes: string[]
}

const NODE_GPU = '@tensorflow/tfjs-node-gpu'
const NODE_CPU = '@tensorflow/tfjs-node'
const INSTALL_HINT = `npm install ${NODE_CPU} (or ${NODE_GPU} on a Linux machine with CUDA)`

let current: {preference: EnginePreference, info: EngineInfo} | undefined
let queue: Promise<unknown> = Promise.resolve()

/**
 * Selects and initialises the backend. `auto` tries tfjs-node-gpu, then tfjs-node (both optional
 * dependencies), then wasm, then the pure-JS cpu backend. Calling it again with the same
 * preference returns the same info (and re-activates that backend if something switched away).
 */
export async function initEngine(preference: EnginePreference): Promise<EngineInfo> {
  // Calls are serialised: two concurrent selections would race on the global tf engine.
  const result = queue.then(() => select(preference))
  queue = result.catch(() => undefined)
  return result
}

/**
 * The backend running now: the label initEngine reported (e.g. 'tensorflow-gpu') while its choice
 * is active, otherwise TensorFlow.js's own name for the active backend, or 'none'.
 */
export function backendName(): string {
  const active = tf.getBackend() as string | null | undefined
  if (current !== undefined && active === current.info.tfBackendName) return current.info.backend
  return active ?? 'none'
}

async function select(preference: EnginePreference): Promise<EngineInfo> {
  if (current?.preference === preference) {
    if (tf.getBackend() !== current.info.tfBackendName) await activate(current.info.tfBackendName)
    return current.info
  }
  quietCpuBanner()
  const info = await choose(preference)
  current = {preference, info}
  return info
}

async function choose(preference: EnginePreference): Promise<EngineInfo> {
  const notes: string[] = []
  const make = (backend: EngineBackend, tfBackendName: string): EngineInfo =>
    ({backend, tfBackendName, requested: preference, notes})

  if (preference === 'auto' || preference === 'tensorflow') {
    const native = await loadNative(notes)
    if (native !== undefined) return make(native, 'tensorflow')
    if (preference === 'tensorflow') {
      throw new UserError(`The 'tensorflow' backend needs ${NODE_CPU} or ${NODE_GPU}, and neither could be loaded.`, {
        code: 'BACKEND_UNAVAILABLE',
        exit: 'usage',
        suggestions: [
          `npm install ${NODE_CPU}   (native TensorFlow on the CPU)`,
          `npm install ${NODE_GPU}   (on a Linux machine with CUDA)`,
          "or set train.backend to 'auto' or 'wasm'",
        ],
        details: {tried: notes},
      })
    }
  }

  if (preference === 'auto' || preference === 'wasm') {
    if (await activate('wasm')) {
      registerWasmTrainingKernels()
      if (preference === 'auto') notes.push(`Using the wasm backend; for native speed: ${INSTALL_HINT}.`)
      // The threaded wasm build cannot start in Node (tfjs reports no thread support under Node,
      // and its worker is loaded from a blob: URL that worker_threads rejects), so wasm runs on
      // one core: setThreadsCount() would have no effect.
      notes.push('The wasm backend runs on a single thread in Node.js.')
      return make('wasm', 'wasm')
    }
    notes.push('The wasm backend failed to initialise; falling back to the pure-JavaScript cpu backend.')
  }

  if (!(await activate('cpu'))) throw new Error('TensorFlow.js could not initialise even its cpu backend')
  notes.push(`The pure-JavaScript cpu backend is slow; for native speed: ${INSTALL_HINT}.`)
  return make('cpu', 'cpu')
}

/** Loads tfjs-node-gpu or tfjs-node if installed; returns which, noting why each was not used. */
async function loadNative(notes: string[]): Promise<EngineBackend | undefined> {
  const candidates: Array<[string, EngineBackend]> = [[NODE_GPU, 'tensorflow-gpu'], [NODE_CPU, 'tensorflow']]
  for (const [name, backend] of candidates) {
    // tfjs-node runs on the @tensorflow/tfjs bundle and, through it, on a tfjs-core of its own
    // version: the same package as ml's when the versions match (npm installs one copy), another
    // copy otherwise. Copies share the global engine, so its backend would register either way;
    // across a major version their kernels and engine do not fit, so it is not loaded at all.
    const theirs = nativeCoreVersion(name)
    if (theirs !== undefined && theirs !== tf.version_core) {
      const align = `npm install ${name}@${tf.version_core}`
      if (theirs.split('.')[0] !== tf.version_core.split('.')[0]) {
        notes.push(`${name} is built on TensorFlow.js ${theirs} and ml on ${tf.version_core}, which do not mix; ${align}.`)
        continue
      }
      notes.push(`${name} runs on another copy of TensorFlow.js (${theirs}; ml uses ${tf.version_core}); to align them: ${align}.`)
    }
    try {
      // A variable specifier: these packages are optional, and TypeScript must not need them.
      const moduleName: string = name
      await import(moduleName)
    } catch (error) {
      const why = isNotInstalled(error, name) ? 'is not installed' : `failed to load: ${message(error)}`
      notes.push(`${name} ${why}.`)
      continue
    }
    if (tf.findBackendFactory('tensorflow') == null) {
      notes.push(`${name} loaded but its backend is not registered with ml's TensorFlow.js engine; npm install ${name}@${tf.version_core}.`)
      continue
    }
    if (await activate('tensorflow')) return backend
    notes.push(`${name} loaded but its backend failed to initialise.`)
  }
  return undefined
}

/**
 * The version of @tensorflow/tfjs-core that a native package (tfjs-node) would run on: the one its
 * @tensorflow/tfjs dependency resolves. Undefined when the package or that chain is not installed.
 * `from` is where the package is looked up (this module; tests pass a folder of their own).
 */
export function nativeCoreVersion(name: string, from: string | URL = import.meta.url): string | undefined {
  try {
    const native = createRequire(createRequire(from).resolve(`${name}/package.json`))
    const bundle = createRequire(native.resolve('@tensorflow/tfjs/package.json'))
    const version = (bundle('@tensorflow/tfjs-core/package.json') as {version?: unknown}).version
    return typeof version === 'string' ? version : undefined
  } catch {
    return undefined
  }
}

async function activate(name: string): Promise<boolean> {
  try {
    return await tf.setBackend(name)
  } catch {
    return false
  }
}

/**
 * tfjs's cpu backend prints a "Hi, looks like you are running TensorFlow.js in Node.js" banner on
 * its first write. Our notes already say what it says, and the alternatives (prod mode, which
 * silences every tfjs warning, or flipping IS_NODE, which changes how tfjs loads files) cost
 * more than clearing the backend's first-use flag, which only governs that banner.
 */
function quietCpuBanner(): void {
  try {
    const cpu = tf.findBackend('cpu') as {firstUse?: unknown} | null
    if (cpu !== null && cpu.firstUse === true) cpu.firstUse = false
  } catch {
    // A missing or changed cpu backend only means the banner may show.
  }
}

/** True when the package itself is missing, not when it is there but one of its own imports is. */
function isNotInstalled(error: unknown, name: string): boolean {
  const code = (error as {code?: unknown} | null)?.code
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message(error).includes(`'${name}'`)
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
