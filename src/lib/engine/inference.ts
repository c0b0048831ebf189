// Chooses the inference engine for serve, predict, evaluate and export's accuracy check: the one
// place that decides between ONNX Runtime (CUDA execution provider when installed, else CPU) and
// TensorFlow.js (tfjs-node-gpu, tfjs-node, wasm, cpu: see backend.ts), and sizes its threads.
// onnxruntime-node is imported lazily: it may be absent from a user's install, and then inference
// falls back to TensorFlow.js with one notice.
import {existsSync} from 'node:fs'
import {createRequire} from 'node:module'
import os from 'node:os'
import path from 'node:path'
import type * as Ort from 'onnxruntime-node'

export type OnnxRuntimeModule = typeof Ort
export type InferenceRuntime = 'onnx' | 'tfjs'
/** What a user may ask for: serve.runtime, or --engine. */
export type RuntimePreference = 'auto' | InferenceRuntime
export type ExecutionProvider = 'cuda' | 'cpu'

export interface OnnxAvailability {
  available: boolean
  /** onnxruntime-node's version when it loaded. */
  version?: string
  /** Execution providers usable here, best first (cuda only when its provider library is installed). */
  providers: ExecutionProvider[]
  /** Why it is not available, or why CUDA is not used. */
  notes: string[]
}

export interface InferenceChoice {
  runtime: InferenceRuntime
  /** How the choice reads in logs, --json and /v2 metadata: "onnxruntime (cpu)", "tfjs". */
  label: string
  /** ONNX Runtime execution providers, best first (empty for tfjs). */
  providers: ExecutionProvider[]
  /** Why this engine and not a faster one, in one line each. */
  notes: string[]
}

const ORT = 'onnxruntime-node'
export const ONNX_MISSING_NOTICE = `${ORT} is not installed: inference uses TensorFlow.js, several times slower on CPU. For ONNX Runtime: npm install ${ORT}`

let ortLoad: Promise<{module?: OnnxRuntimeModule; availability: OnnxAvailability}> | undefined

/** Imports onnxruntime-node once per process; undefined when it is missing or fails to load. */
export async function loadOnnxRuntime(): Promise<OnnxRuntimeModule | undefined> {
  return (await probe()).module
}

/** Whether ONNX Runtime can run here, and with which execution providers. */
export async function onnxAvailability(): Promise<OnnxAvailability> {
  return (await probe()).availability
}

function probe(): Promise<{module?: OnnxRuntimeModule; availability: OnnxAvailability}> {
  ortLoad ??= (async () => {
    if (process.env.ML_DISABLE_ONNXRUNTIME === '1') {
      return {availability: {available: false, providers: [], notes: [`${ORT} is disabled (ML_DISABLE_ONNXRUNTIME=1): inference uses TensorFlow.js`]}}
    }
    let module: OnnxRuntimeModule
    try {
      // A variable specifier: the package is optional, and bundlers must not resolve it eagerly.
      const name: string = ORT
      module = (await import(name)) as OnnxRuntimeModule
    } catch (error) {
      const code = (error as {code?: unknown} | null)?.code
      const missing = code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND'
      return {availability: {available: false, providers: [], notes: [missing ? ONNX_MISSING_NOTICE : `${ORT} failed to load (${(error as Error).message}): inference uses TensorFlow.js`]}}
    }
    const notes: string[] = []
    const providers: ExecutionProvider[] = []
    if (cudaProviderInstalled(module)) providers.push('cuda')
    else if (process.platform === 'linux' && os.arch() === 'x64') notes.push(`ONNX Runtime runs on the CPU; for its CUDA execution provider, reinstall ${ORT} with ONNXRUNTIME_NODE_INSTALL_CUDA=v12 on a machine with CUDA 12`)
    providers.push('cpu')
    return {module, availability: {available: true, version: module.env.versions?.node ?? module.env.versions?.common, providers, notes}}
  })()
  return ortLoad
}

/**
 * The CUDA execution provider ships as a separate shared library that onnxruntime-node's install
 * script downloads only on request; it is usable when that library sits beside the native binding.
 */
function cudaProviderInstalled(module: OnnxRuntimeModule): boolean {
  if (process.env.ML_ONNX_CUDA === '0') return false
  const listed = (module as {listSupportedBackends?: () => Array<{name: string}>}).listSupportedBackends?.() ?? []
  if (!listed.some((b) => b.name === 'cuda')) return false
  try {
    const entry = createRequire(import.meta.url).resolve(ORT)
    const bin = path.join(path.dirname(entry), '..', 'bin', 'napi-v6', process.platform, os.arch())
    return existsSync(path.join(bin, process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so'))
  } catch {
    return false
  }
}

/**
 * The selection rule, in one place: ONNX Runtime whenever the model has (or can be given) an ONNX
 * graph and onnxruntime-node loads, on CUDA when its provider is installed; TensorFlow.js otherwise
 * (which itself prefers tfjs-node-gpu, then tfjs-node, then wasm: backend.ts). `preference` tfjs
 * forces TensorFlow.js; onnx forces ONNX Runtime and throws (via the caller) when it cannot.
 */
export function selectInference(preference: RuntimePreference, model: {hasOnnx: boolean; onnxUnsupported?: string}, ort: OnnxAvailability): InferenceChoice {
  const tfjs = (notes: string[]): InferenceChoice => ({runtime: 'tfjs', label: 'tfjs', providers: [], notes})
  if (preference === 'tfjs') return tfjs([])
  if (!ort.available) return tfjs(ort.notes)
  if (!model.hasOnnx) return tfjs(model.onnxUnsupported ? [model.onnxUnsupported] : [])
  return {runtime: 'onnx', label: `onnxruntime (${ort.providers[0]})`, providers: ort.providers, notes: ort.notes}
}

export interface ThreadPlan {
  /** Model instances (worker threads) per server process. */
  instances: number
  /** ONNX Runtime intra-op threads per instance. */
  threads: number
  processes: number
  /** Cores left to the processes' event loops (HTTP, JSON, image decoding). */
  reservedCores: number
}

/**
 * Sizes a server to the cores: each process's event loop keeps one core's share for HTTP, and
 * instances x threads x processes fill the rest (at least one instance of one thread). `auto`
 * instances take one thread each, which measured best for small batched models (bench:serve
 * reports the alternatives); a fixed thread count divides the cores into fewer instances.
 */
export function planThreads(cores: number, processes: number, requested: {instances: number | 'auto'; threads: number | 'auto'}): ThreadPlan {
  const reservedCores = Math.min(processes, Math.max(0, cores - 1))
  const perProcess = Math.max(1, Math.floor((cores - reservedCores) / processes))
  let {instances, threads} = requested
  if (instances === 'auto' && threads === 'auto') threads = 1
  if (instances === 'auto') instances = Math.max(1, Math.floor(perProcess / (threads as number)))
  if (threads === 'auto') threads = Math.max(1, Math.floor(perProcess / instances))
  return {instances, threads, processes, reservedCores}
}

/** Intra-op threads for one-process batch inference (predict, evaluate, export): every core. */
export function batchInferenceThreads(cores = os.availableParallelism()): number {
  return Math.max(1, cores)
}

/** The engine a server runs with, as logged at start and shown in KServe `/v2` server metadata. */
export interface ServingEngine {
  /** serve.runtime as configured. */
  runtime: RuntimePreference
  /** What runs versions that have model.onnx: "onnxruntime (cpu)", "onnxruntime (cuda)", or "tfjs (wasm)" when ONNX Runtime is absent. */
  onnx: string
  /** TensorFlow.js's backend, for versions run by TensorFlow.js; 'not started' while none is served (the instances start it with the first). */
  tfjs: string
  onnxruntimeVersion: string | null
  instances: number
  threads: number
  processes: number
  notes: string[]
}

export async function servingEngine(runtime: RuntimePreference, tfjsBackend: string, plan: {instances: number; threads: number; processes: number}): Promise<ServingEngine> {
  const ort = await onnxAvailability()
  const choice = selectInference(runtime, {hasOnnx: true}, ort)
  const engine = {
    runtime,
    onnx: choice.runtime === 'onnx' ? choice.label : 'tfjs',
    tfjs: '',
    onnxruntimeVersion: ort.version ?? null,
    instances: plan.instances,
    threads: plan.threads,
    processes: plan.processes,
    notes: choice.notes,
  }
  return withTfjsBackend(engine, tfjsBackend)
}

/** What a server says of TensorFlow.js's backend until a version runs on it. */
export const TFJS_NOT_STARTED = 'not started'

/** The engine once TensorFlow.js runs on `backend` ('' while not started). */
export function withTfjsBackend(engine: ServingEngine, backend: string): ServingEngine {
  const tfjs = backend || TFJS_NOT_STARTED
  return {...engine, tfjs, onnx: engine.onnx.startsWith('tfjs') ? `tfjs (${tfjs})` : engine.onnx}
}
