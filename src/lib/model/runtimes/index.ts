// Loading a model for inference with the engine the engine module chooses: ONNX Runtime for a
// model.onnx (or, for a run's tfjs-only model, an ONNX graph converted in memory and checked
// against TensorFlow.js), TensorFlow.js otherwise. Used by serve's instances, predict and evaluate.
import {backendName} from '../../engine/backend.js'
import {batchInferenceThreads, onnxAvailability, selectInference, type ExecutionProvider, type InferenceChoice, type RuntimePreference} from '../../engine/inference.js'
import {convertToOnnx} from '../../export/onnx.js'
import {exists, joinPath, readBytes} from '../../storage/index.js'
import {UserError} from '../../errors.js'
import {MODEL_FILES} from '../repository.js'
import {loadOnnxModel} from './onnx.js'
import {loadTfjsModel} from './tfjs.js'
import type {InferenceModel} from './types.js'

export type {InferenceModel} from './types.js'
export {loadOnnxModel} from './onnx.js'
export {loadTfjsModel, tfjsModel} from './tfjs.js'

/** Largest difference from TensorFlow.js an ONNX graph may show before it is refused. */
export const ONNX_TOLERANCE = 1e-4

export interface OpenOptions {
  runtime?: RuntimePreference
  /** ONNX Runtime intra-op threads (default: every core). */
  threads?: number
  providers?: ExecutionProvider[]
  /** For a tfjs-only model folder: convert to ONNX in memory (default true). */
  convert?: boolean
}

export interface OpenedModel {
  model: InferenceModel
  choice: InferenceChoice
  /** The ONNX graph converted in memory, when the folder had none (to load it elsewhere, e.g. a worker). */
  onnxBytes?: Uint8Array
}

/**
 * Opens the model in `dir` (an export version or a run's model folder) for batch inference. A
 * tfjs-only folder is converted to ONNX in memory and used only when its outputs on a probe batch
 * stay within ONNX_TOLERANCE of TensorFlow.js; otherwise TensorFlow.js runs it, and the choice says why.
 */
export async function openModel(dir: string, inputShape: [number, number, number], options: OpenOptions = {}): Promise<OpenedModel> {
  const opened = await open(dir, inputShape, options)
  // TensorFlow.js runs on whichever backend initEngine chose (tfjs-node-gpu, tfjs-node, wasm, cpu).
  if (opened.choice.runtime === 'tfjs') opened.choice = {...opened.choice, label: `tfjs (${backendName()})`}
  return opened
}

async function open(dir: string, inputShape: [number, number, number], options: OpenOptions): Promise<OpenedModel> {
  const preference = options.runtime ?? 'auto'
  const hasOnnx = await exists(joinPath(dir, MODEL_FILES.onnx))
  const hasJson = await exists(joinPath(dir, MODEL_FILES.modelJson))
  const ort = await onnxAvailability()
  const threads = options.threads ?? batchInferenceThreads()
  const providers = options.providers ?? ort.providers
  if (preference === 'onnx' && !ort.available) {
    throw new UserError(ort.notes[0] ?? 'ONNX Runtime is not available', {code: 'ONNXRUNTIME_MISSING', exit: 'usage', suggestions: ['npm install onnxruntime-node']})
  }
  if (hasOnnx || !hasJson) {
    const choice = selectInference(preference, {hasOnnx}, ort)
    if (choice.runtime === 'onnx' || !hasJson) {
      if (!hasOnnx) throw new UserError(`no model in ${dir} (neither ${MODEL_FILES.modelJson} nor ${MODEL_FILES.onnx})`, {code: 'MODEL_NOT_FOUND', exit: 'data'})
      return {model: await loadOnnxModel(joinPath(dir, MODEL_FILES.onnx), inputShape, {threads, providers}), choice: selectInference('onnx', {hasOnnx: true}, ort)}
    }
    return {model: await loadTfjsModel(dir, inputShape), choice}
  }
  // tfjs only: a run's model folder, or an export without ONNX.
  const tfjs = await loadTfjsModel(dir, inputShape)
  if (preference === 'tfjs' || !ort.available || options.convert === false) return {model: tfjs, choice: selectInference(preference === 'onnx' ? 'auto' : preference, {hasOnnx: false}, ort)}
  let bytes: Uint8Array
  try {
    bytes = convertToOnnx({modelJson: JSON.parse(Buffer.from(await readBytes(joinPath(dir, MODEL_FILES.modelJson))).toString('utf8')), weights: await readBytes(joinPath(dir, MODEL_FILES.weights)), name: 'model', producerVersion: 'ml', metadata: {}})
  } catch (error) {
    if (!(error instanceof UserError)) throw error
    const note = `ONNX cannot express this model (${error.message}): TensorFlow.js runs it`
    if (preference === 'onnx') throw error
    return {model: tfjs, choice: selectInference('auto', {hasOnnx: false, onnxUnsupported: note}, ort)}
  }
  const onnx = await loadOnnxModel(bytes, inputShape, {threads, providers})
  const diff = await probeDifference(tfjs, onnx, inputShape)
  if (diff > ONNX_TOLERANCE) {
    onnx.dispose()
    const note = `the in-memory ONNX graph differs from TensorFlow.js by ${diff.toExponential(2)} (over ${ONNX_TOLERANCE}): TensorFlow.js runs it`
    if (preference === 'onnx') throw new UserError(note, {code: 'ONNX_MISMATCH', exit: 'data'})
    return {model: tfjs, choice: selectInference('auto', {hasOnnx: false, onnxUnsupported: note}, ort)}
  }
  tfjs.dispose()
  return {model: onnx, choice: selectInference(preference, {hasOnnx: true}, ort), onnxBytes: bytes}
}

/** Largest output difference of two models on a fixed batch of pseudo-random images. */
export async function probeDifference(a: InferenceModel, b: InferenceModel, inputShape: [number, number, number], n = 8): Promise<number> {
  const size = inputShape[0] * inputShape[1] * inputShape[2]
  const input = new Float32Array(n * size)
  // A fixed LCG: the same probe every time, covering [0, 1) like scaled pixels.
  let state = 12345
  for (let i = 0; i < input.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    input[i] = (state >>> 8) / 16_777_216
  }
  const [x, y] = [await a.run(input.slice(), n), await b.run(input.slice(), n)]
  let max = 0
  for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i]! - y[i]!))
  return max
}
