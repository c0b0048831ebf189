// An ONNX classifier run by onnxruntime-node (imported lazily through the engine module).
import {loadOnnxRuntime, type ExecutionProvider} from '../../engine/inference.js'
import {UserError} from '../../errors.js'
import type {InferenceModel} from './types.js'

export interface OnnxSessionOptions {
  /** Intra-op threads (ONNX Runtime's own pool for one run). */
  threads: number
  /** Execution providers, best first. */
  providers?: ExecutionProvider[]
  /** Tensor names; default the graph's 'image' / 'probabilities', else its first input and output. */
  input?: string
  output?: string
}

/** Opens a model.onnx file (path) or in-memory graph. */
export async function loadOnnxModel(source: string | Uint8Array, inputShape: [number, number, number], options: OnnxSessionOptions): Promise<InferenceModel> {
  const ort = await loadOnnxRuntime()
  if (ort === undefined) {
    throw new UserError('ONNX Runtime is not available (onnxruntime-node is not installed)', {
      code: 'ONNXRUNTIME_MISSING',
      exit: 'usage',
      suggestions: ['npm install onnxruntime-node', 'or run the model with TensorFlow.js (serve.runtime: tfjs / --engine tfjs)'],
    })
  }
  const providers = options.providers?.length ? options.providers : ['cpu' as const]
  const sessionOptions = {
    intraOpNumThreads: options.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential' as const,
    graphOptimizationLevel: 'all' as const,
    executionProviders: providers,
    // Idle intra-op threads sleep instead of spinning: they share the cores with image decoding
    // (predict) and HTTP (serve), which spinning threads would starve.
    extra: {session: {intra_op: {allow_spinning: '0'}}},
  }
  // Sequential execution and one inter-op thread: results do not depend on scheduling.
  const session = typeof source === 'string' ? await ort.InferenceSession.create(source, sessionOptions) : await ort.InferenceSession.create(source, sessionOptions)
  const inputName = options.input ?? (session.inputNames.includes('image') ? 'image' : session.inputNames[0]!)
  const outputName = options.output ?? (session.outputNames.includes('probabilities') ? 'probabilities' : session.outputNames[0]!)
  const [h, w, c] = inputShape
  return {
    runtime: 'onnx',
    providers,
    async run(input, n) {
      const feed = new ort.Tensor('float32', input, [n, h, w, c])
      const result = await session.run({[inputName]: feed})
      const out = result[outputName]!
      if (out.type !== 'float32') throw new Error(`ONNX output ${outputName} is ${out.type}, not float32`)
      // A copy: the tensor's data may be a view of native memory released with it.
      const values = Float32Array.from(out.data as Float32Array)
      for (const t of Object.values(result)) t.dispose()
      return values
    },
    dispose: () => void session.release(),
  }
}
