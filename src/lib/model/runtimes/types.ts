// What the inference paths (serve's instances, predict, evaluate, export's check) need from a loaded
// model, whichever engine runs it.
import type {ExecutionProvider, InferenceRuntime} from '../../engine/inference.js'

export interface InferenceModel {
  runtime: InferenceRuntime
  /** ONNX Runtime execution providers in use (empty for tfjs). */
  providers: ExecutionProvider[]
  /** Class probabilities (n * numClasses) for n NHWC float images; the array is the caller's. */
  run(input: Float32Array, n: number): Promise<Float32Array>
  dispose(): void
}
