// Runs an exported ONNX classifier with onnxruntime-node (imported lazily through the engine module):
// used by the export to measure the accuracy of what it wrote and to refuse a graph that differs from
// the tfjs model, and by tests to check the ONNX graph against the tfjs model.
import type * as Ort from 'onnxruntime-node'
import type {DecodedSplit} from '../data/types.js'
import {batchInferenceThreads, loadOnnxRuntime} from '../engine/inference.js'
import {UserError} from '../errors.js'
import {ONNX_INPUT, ONNX_OUTPUT} from './onnx.js'

export interface PixelScaling {
  scale: number
  offset: number
}

export interface SplitScores {
  /** count * numClasses probabilities. */
  probabilities: Float32Array
  accuracy: number
}

type Session = Ort.InferenceSession

let ort: typeof Ort | undefined

/** onnxruntime-node, or a UserError saying how to install it. */
export async function requireOnnxRuntime(): Promise<typeof Ort> {
  ort ??= await loadOnnxRuntime()
  if (ort === undefined) {
    throw new UserError('onnxruntime-node is not installed, so the ONNX graph cannot be checked', {
      code: 'ONNXRUNTIME_MISSING',
      exit: 'usage',
      suggestions: ['npm install onnxruntime-node'],
    })
  }
  return ort
}

export async function createOnnxSession(bytes: Uint8Array, threads = batchInferenceThreads()): Promise<Session> {
  const runtime = await requireOnnxRuntime()
  // Single-threaded inter-op and sequential execution keep results identical from run to run.
  return runtime.InferenceSession.create(bytes, {executionMode: 'sequential', interOpNumThreads: 1, intraOpNumThreads: threads, extra: {session: {intra_op: {allow_spinning: '0'}}}})
}

/** Probabilities for n NHWC float images. */
export async function runOnnx(session: Session, inputs: Float32Array, shape: [number, number, number, number]): Promise<Float32Array> {
  const runtime = await requireOnnxRuntime()
  const feeds = {[ONNX_INPUT]: new runtime.Tensor('float32', inputs, shape)}
  const out = await session.run(feeds)
  const probs = out[ONNX_OUTPUT]!
  const data = Float32Array.from(probs.data as Float32Array)
  for (const t of Object.values(out)) t.dispose()
  feeds[ONNX_INPUT].dispose()
  return data
}

/** The input floats for stored pixels, computed exactly as training's batches compute them. */
export function scalePixels(pixels: Uint8Array, scaling: PixelScaling): Float32Array {
  const out = new Float32Array(pixels.length)
  // Training divides by 255; multiplying by 1/255 can differ in the last bit.
  if (Math.abs(scaling.scale - 1 / 255) < 1e-12 && scaling.offset === 0) for (let i = 0; i < pixels.length; i++) out[i] = pixels[i]! / 255
  else for (let i = 0; i < pixels.length; i++) out[i] = pixels[i]! * scaling.scale + scaling.offset
  return out
}

/** Index of the largest value of each row (the first one on ties, like predictSplit). */
export function argmaxRows(probabilities: Float32Array, numClasses: number): Int32Array {
  const n = probabilities.length / numClasses
  const out = new Int32Array(n)
  for (let i = 0; i < n; i++) {
    let best = 0
    for (let k = 1; k < numClasses; k++) if (probabilities[i * numClasses + k]! > probabilities[i * numClasses + best]!) best = k
    out[i] = best
  }
  return out
}

/** Scores an ONNX classifier on a decoded split, in batches. */
export async function predictSplitOnnx(session: Session, split: DecodedSplit, numClasses: number, scaling: PixelScaling, batchSize = 256): Promise<SplitScores> {
  const frame = split.height * split.width * split.channels
  const probabilities = new Float32Array(split.count * numClasses)
  for (let start = 0; start < split.count; start += batchSize) {
    const n = Math.min(batchSize, split.count - start)
    const inputs = scalePixels(split.pixels.subarray(start * frame, (start + n) * frame), scaling)
    probabilities.set(await runOnnx(session, inputs, [n, split.height, split.width, split.channels]), start * numClasses)
  }
  const predicted = argmaxRows(probabilities, numClasses)
  let correct = 0
  for (let i = 0; i < split.count; i++) if (predicted[i] === split.labels[i]) correct++
  return {probabilities, accuracy: correct / Math.max(1, split.count)}
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!))
  return max
}
