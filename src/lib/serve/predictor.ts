// A loaded classifier: model + labels + preprocessing spec, turning encoded images into top-k
// labels exactly as training saw them (same decode, resize and 1/255 scaling from data/image.ts).
import type {ImageSpec} from '../config/schema.js'
import {decodeToPixels, pixelsToFloat, type ImageLimits} from '../data/image.js'
import {MODEL_FILES} from '../model/repository.js'
import {exists, joinPath, readJson} from '../storage/index.js'
import type {InferenceChoice} from '../engine/inference.js'
import type {EnginePreference} from '../engine/backend.js'
import {batchInferenceThreads} from '../engine/inference.js'
import {openModel, type InferenceModel, type OpenedModel, type OpenOptions} from '../model/runtimes/index.js'
import {UserError} from '../errors.js'

export interface TopK {
  label: string
  index: number
  score: number
}

export interface Preprocessing extends ImageSpec {
  scale: number
  offset: number
}

export class Predictor {
  private constructor(
    readonly dir: string,
    readonly model: InferenceModel,
    readonly labels: string[],
    readonly preprocessing: Preprocessing,
    /** The engine running the model, and why. */
    readonly engine: InferenceChoice,
  ) {}

  /**
   * Loads a model directory: an export version folder, or a run's model folder (labels beside it).
   * The engine: `options.runtime` (default tfjs; auto picks ONNX Runtime when it can, see openModel).
   */
  static async load(dir: string, options: PredictorOptions = {}): Promise<Predictor> {
    if (!(await exists(joinPath(dir, MODEL_FILES.modelJson))) && !(await exists(joinPath(dir, MODEL_FILES.onnx)))) {
      throw new UserError(`no model at ${dir} (neither ${MODEL_FILES.modelJson} nor ${MODEL_FILES.onnx})`, {
        code: 'MODEL_NOT_FOUND',
        exit: 'data',
        suggestions: ['Train one with `ml train`, or point --run/--model at a run or export directory.'],
      })
    }
    const sidecar = async <T>(file: string): Promise<T> => {
      for (const candidate of [joinPath(dir, file), joinPath(dir, '..', file)]) if (await exists(candidate)) return readJson<T>(candidate)
      throw new UserError(`${file} not found next to the model in ${dir}`, {code: 'MODEL_INCOMPLETE', exit: 'data'})
    }
    const labels = await sidecar<string[]>(MODEL_FILES.labels)
    const preprocessing = await sidecar<Preprocessing>(MODEL_FILES.preprocessing)
    const inputShape: [number, number, number] = [preprocessing.height, preprocessing.width, preprocessing.channels]
    const opened = await openModel(dir, inputShape, {runtime: 'tfjs', ...options})
    const model = options.worker ? await moveToWorker(opened, dir, inputShape, labels.length, options.worker.engine, options.worker.threads) : opened.model
    return new Predictor(dir, model, labels, preprocessing, opened.choice)
  }

  get inputShape(): [number, number, number] {
    return [this.preprocessing.height, this.preprocessing.width, this.preprocessing.channels]
  }

  /** Decodes and normalises one encoded image; throws a UserError naming `origin` when it cannot. */
  async preprocess(bytes: Buffer, origin: string, limits: ImageLimits = DEFAULT_IMAGE_LIMITS): Promise<Float32Array> {
    return preprocessImage(bytes, this.preprocessing, origin, limits)
  }

  /** Class probabilities for a batch of preprocessed images (n * H * W * C floats). */
  async predictBatch(inputs: Float32Array, n: number): Promise<Float32Array> {
    return this.model.run(inputs, n)
  }

  topK(probabilities: Float32Array, row: number, k: number): TopK[] {
    const n = this.labels.length
    const scores = Array.from(probabilities.subarray(row * n, (row + 1) * n), (score, index) => ({index, score, label: this.labels[index]!}))
    return scores.sort((a, b) => b.score - a.score || a.index - b.index).slice(0, Math.max(1, Math.min(k, n)))
  }

  dispose(): void {
    this.model.dispose()
  }
}

export interface PredictorOptions extends OpenOptions {
  /**
   * Run the model in a worker thread (a one-instance InstancePool), so that the event loop stays
   * free to read and decode the next images while a batch runs: ONNX Runtime's and TensorFlow.js's
   * runs are synchronous on the thread that calls them. `engine` is the TensorFlow.js backend preference;
   * `threads` ONNX Runtime's intra-op threads there (default batchInferenceThreads(): every core).
   */
  worker?: {engine: EnginePreference; threads?: number}
}

/** Moves an opened model into a worker thread: the same engine choice, loaded there. */
export async function moveToWorker(opened: OpenedModel, dir: string, inputShape: [number, number, number], numClasses: number, engine: EnginePreference, threads = batchInferenceThreads()): Promise<InferenceModel> {
  const model = opened.model
  model.dispose()
  const {InstancePool} = await import('./pool.js')
  const {JsonLog} = await import('./log.js')
  const pool = await InstancePool.start(1, engine, new JsonLog(undefined))
  try {
    await pool.load({key: 'model', dir, runtime: model.runtime, onnxBytes: opened.onnxBytes, threads, providers: model.providers, inputShape, numClasses, warmup: [1]})
  } catch (error) {
    await pool.close()
    throw error
  }
  return {
    runtime: model.runtime,
    providers: model.providers,
    run: async (input, n) => (await pool.run('model', [input], n)).output,
    dispose: () => void pool.close(),
  }
}

export const DEFAULT_IMAGE_LIMITS: ImageLimits = {maxPixels: 40_000_000, maxFileBytes: 50 * 1024 * 1024}

/**
 * Decodes and normalises one encoded image to a model's input floats. A function of its own so that
 * the server can preprocess on its main thread (sharp works in libuv's pool) without a loaded model.
 * The UserError's code is IMAGE_<reason>, e.g. IMAGE_CORRUPT or IMAGE_TOO_MANY_PIXELS.
 */
export async function preprocessImage(bytes: Buffer, preprocessing: Preprocessing, origin: string, limits: ImageLimits = DEFAULT_IMAGE_LIMITS, options: {fastPath?: boolean} = {}): Promise<Float32Array> {
  const result = await decodeToPixels(bytes, preprocessing, limits, options)
  if (!result.ok) throw new UserError(`${origin}: ${result.detail}`, {code: `IMAGE_${result.reason.toUpperCase().replaceAll('-', '_')}`, exit: 'data'})
  const floats = pixelsToFloat(result.pixels)
  if (preprocessing.scale !== 1 / 255 || preprocessing.offset !== 0) {
    for (let i = 0; i < floats.length; i++) floats[i] = result.pixels[i]! * preprocessing.scale + preprocessing.offset
  }
  return floats
}
