// One model instance: a worker thread that initialises the engine like training does, loads model
// versions (ONNX Runtime or TensorFlow.js, through model/runtimes) and runs batches, so inference
// never blocks the event loop.
import {parentPort, workerData} from 'node:worker_threads'
import {initEngine} from '../engine/backend.js'
import {MODEL_FILES} from '../model/repository.js'
import {loadOnnxModel, loadTfjsModel, type InferenceModel} from '../model/runtimes/index.js'
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

async function open(spec: LoadSpec): Promise<InferenceModel> {
  if (spec.runtime === 'onnx') return loadOnnxModel(spec.onnxBytes ?? joinPath(spec.dir, MODEL_FILES.onnx), spec.inputShape, {threads: spec.threads ?? 1, providers: spec.providers})
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

try {
  const info = await initEngine((workerData as WorkerInit).engine)
  port.on('message', (message: ToWorker) => void handle(message))
  post({type: 'ready', backend: info.backend})
} catch (error) {
  post({type: 'fatal', message: error instanceof Error ? error.message : String(error)})
}
