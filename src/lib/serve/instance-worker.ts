// One model instance: a worker thread that initialises the engine like training does, loads model
// versions (TensorFlow.js or ONNX Runtime) and runs batches, so inference never blocks the event loop.
import path from 'node:path'
import {parentPort, workerData} from 'node:worker_threads'
import {initEngine} from '../engine/backend.js'
import {importOptional} from '../optional.js'
import {Predictor} from './predictor.js'
import type {FromWorker, LoadSpec, ToWorker, WorkerInit} from './worker-protocol.js'

interface LoadedModel {
  run(input: Float32Array, n: number): Promise<Float32Array>
  dispose(): void
}

const port = parentPort!
const models = new Map<string, {spec: LoadSpec; model: LoadedModel}>()

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer)
}

async function loadTfjs(spec: LoadSpec): Promise<LoadedModel> {
  const predictor = await Predictor.load(spec.dir)
  return {run: (input, n) => predictor.predictBatch(input, n), dispose: () => predictor.dispose()}
}

async function loadOnnx(spec: LoadSpec): Promise<LoadedModel> {
  const ort = await importOptional('onnxruntime-node', () => import('onnxruntime-node'))
  // One thread per session: parallelism comes from instances, and threads beyond the cores only contend.
  const session = await ort.InferenceSession.create(path.join(spec.dir, 'model.onnx'), {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  })
  const inputName = session.inputNames.includes('image') ? 'image' : session.inputNames[0]!
  const outputName = session.outputNames.includes('probabilities') ? 'probabilities' : session.outputNames[0]!
  const [h, w, c] = spec.inputShape
  return {
    async run(input, n) {
      const result = await session.run({[inputName]: new ort.Tensor('float32', input, [n, h, w, c])})
      const data = result[outputName]!.data
      if (!(data instanceof Float32Array)) throw new Error(`ONNX output ${outputName} is ${result[outputName]!.type}, not float32`)
      return data
    },
    dispose: () => void session.release(),
  }
}

async function load(spec: LoadSpec): Promise<void> {
  const model = spec.runtime === 'onnx' ? await loadOnnx(spec) : await loadTfjs(spec)
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
      // A copy: the values may be a view of wasm or native memory, which must not be transferred.
      const output = new Float32Array(values)
      post({type: 'result', id: message.id, output, computeMs: performance.now() - started}, [output.buffer])
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
