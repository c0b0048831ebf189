// Messages between the server's main thread and its model instances (worker threads). A batch's
// tensors cross in the instance's SharedArrayBuffer (input floats from offset 0, then the output
// floats), not in the messages.
import type {EnginePreference} from '../engine/backend.js'
import type {ExecutionProvider, InferenceRuntime} from '../engine/inference.js'

export type Runtime = InferenceRuntime

export interface LoadSpec {
  /** `<model>/<version>`: how infer messages name the model. */
  key: string
  dir: string
  runtime: Runtime
  /** [height, width, channels]. */
  inputShape: [number, number, number]
  numClasses: number
  /** The ONNX graph itself, for a model converted in memory (then `dir` holds no model.onnx). */
  onnxBytes?: Uint8Array
  /** ONNX Runtime intra-op threads (serve.threads, sized by planThreads); default 1. */
  threads?: number
  /** ONNX Runtime execution providers, best first; default cpu. */
  providers?: ExecutionProvider[]
  /** Batch sizes run once on zeros after loading, so that the first requests do not pay for setup. */
  warmup: number[]
}

export interface WorkerInit {
  engine: EnginePreference
}

export type ToWorker =
  | {type: 'load'; id: number; spec: LoadSpec}
  | {type: 'unload'; id: number; key: string}
  /** `shared`: the instance's new batch buffer, sent when it was allocated or grown (else the last one). */
  | {type: 'infer'; id: number; key: string; n: number; shared?: SharedArrayBuffer}

export type FromWorker =
  | {type: 'ready'}
  /** TensorFlow.js started in the instance (with its first tfjs version), on this backend. */
  | {type: 'engine'; backend: string}
  | {type: 'done'; id: number; ms: number}
  /** `length` output floats were written to the batch buffer after the input. */
  | {type: 'result'; id: number; length: number; computeMs: number}
  | {type: 'error'; id: number; message: string}
