// One model instance: a worker thread that loads model versions (ONNX Runtime, or TensorFlow.js
// with the engine initialised as training does, through model/runtimes) and runs batches, so
// inference never blocks the event loop.
import {parentPort, workerData} from 'node:worker_threads'
import {MODEL_FILES} from '../model/files.js'
import {loadOnnxModel} from '../model/runtimes/onnx.js'
import type {InferenceModel} from '../model/runtimes/types.js'
import {joinPath} from '../storage/index.js'
import type {FromWorker, LoadSpec, ToWorker, WorkerInit} from './worker-protocol.js'

const port = parentPort!
const models = new Map<string, {spec: LoadSpec; model: InferenceModel}>()
/** The batch buffer shared with the main thread. */
let shared: SharedArrayBuffer | undefined
/** This thread's copy of a batch's input: the runtimes take no views of shared memory. Grown, never per batch. */
let scratch = new Float32Array(0)

function post(message: FromWorker): void {
  port.postMessage(message)
}

/**
 * TensorFlow.js starts with the first version it runs: an instance serving ONNX versions only keeps a
 * heap of ~4 MB instead of ~21 MB, and each full garbage collection there (a pause for every queued
 * request) marks that much less.
 */
let tfjs: Promise<void> | undefined
function startTfjs(): Promise<void> {
  tfjs ??= (async () => {
    const {initEngine} = await import('../engine/backend.js')
    const info = await initEngine((workerData as WorkerInit).engine)
    post({type: 'engine', backend: info.backend})
  })()
  return tfjs
}

async function open(spec: LoadSpec): Promise<InferenceModel> {
  if (spec.runtime === 'onnx') return loadOnnxModel(spec.onnxBytes ?? joinPath(spec.dir, MODEL_FILES.onnx), spec.inputShape, {threads: spec.threads ?? 1, providers: spec.providers})
  await startTfjs()
  const {loadTfjsModel} = await import('../model/runtimes/tfjs.js')
  return loadTfjsModel(spec.dir, spec.inputShape)
}

async function load(spec: LoadSpec): Promise<void> {
  const model = await open(spec)
  try {
    const size = spec.inputShape[0] * spec.inputShape[1] * spec.inputShape[2]
    for (const n of spec.warmup) {
      const output = await model.run(new Float32Array(n * size), n)
      if (output.length !== n * spec.numClasses) {
        throw new Error(`the model outputs ${output.length / n} values per image but labels.json names ${spec.numClasses} classes`)
      }
    }
  } catch (error) {
    model.dispose()
    throw error
  }
  models.get(spec.key)?.model.dispose()
  models.set(spec.key, {spec, model})
}

async function handle(message: ToWorker): Promise<void> {
  const started = performance.now()
  try {
    if (message.type === 'load') {
      await load(message.spec)
      post({type: 'done', id: message.id, ms: performance.now() - started})
    } else if (message.type === 'unload') {
      models.get(message.key)?.model.dispose()
      models.delete(message.key)
      post({type: 'done', id: message.id, ms: performance.now() - started})
    } else {
      if (message.shared !== undefined) shared = message.shared
      const loaded = models.get(message.key)
      if (loaded === undefined) throw new Error(`model ${message.key} is not loaded in this instance`)
      if (shared === undefined) throw new Error('no batch buffer')
      const {inputShape, numClasses} = loaded.spec
      const floats = message.n * inputShape[0] * inputShape[1] * inputShape[2]
      if (scratch.length < floats) scratch = new Float32Array(shared.byteLength / 4)
      const input = scratch.subarray(0, floats)
      input.set(new Float32Array(shared, 0, floats))
      const values = await loaded.model.run(input, message.n)
      if (values.length !== message.n * numClasses) throw new Error(`the model answered ${values.length} values for ${message.n} images of ${numClasses} classes`)
      new Float32Array(shared, 4 * floats, values.length).set(values)
      post({type: 'result', id: message.id, length: values.length, computeMs: performance.now() - started})
    }
  } catch (error) {
    post({type: 'error', id: message.id, message: error instanceof Error ? error.message : String(error)})
  }
}

port.on('message', (message: ToWorker) => void handle(message))
post({type: 'ready'})
