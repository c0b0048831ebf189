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

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer)
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
      const loaded = models.get(message.key)
      if (loaded === undefined) throw new Error(`model ${message.key} is not loaded in this instance`)
      const values = await loaded.model.run(message.input, message.n)
      // The runtimes return arrays of their own; a view of a larger buffer is copied, not transferred.
      const output = values.byteOffset === 0 && values.byteLength === values.buffer.byteLength ? values : new Float32Array(values)
      post({type: 'result', id: message.id, output, computeMs: performance.now() - started}, [output.buffer as ArrayBuffer])
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
