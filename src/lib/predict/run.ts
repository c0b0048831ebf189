// `ml predict` over many files: files are read and decoded in libuv's thread pool (sharp) one batch
// ahead while the engine runs the current batch, so that decoding and inference overlap.
import {readFile} from 'node:fs/promises'
import type {ImageLimits} from '../data/image.js'
import {UserError} from '../errors.js'
import {DEFAULT_IMAGE_LIMITS, type Predictor, type TopK} from '../serve/predictor.js'
import {preprocessImage} from '../serve/predictor.js'

export interface Prediction {
  file: string
  top: TopK[]
}

export interface PredictFailure {
  file: string
  error: string
}

export interface PredictStats {
  images: number
  seconds: number
  imagesPerSec: number
  /** Seconds the engine spent running batches (the rest is decoding not hidden behind it). */
  inferenceSeconds: number
  batchSize: number
}

export interface PredictFilesOptions {
  predictor: Predictor
  files: string[]
  topK: number
  batchSize?: number
  limits?: ImageLimits
  /** Called for each file in input order, as soon as its batch is done. */
  onResult?: (result: Prediction | PredictFailure) => void
  /**
   * Decode with sharp in the thread pool (default), or with the JS decoder on the main thread where
   * it can (serialised with inference): the benchmark compares both.
   */
  threadPoolDecode?: boolean
}

type Decoded = {file: string; input: Float32Array} | PredictFailure

async function decodeFile(file: string, predictor: Predictor, limits: ImageLimits, threadPool: boolean): Promise<Decoded> {
  try {
    const bytes = await readFile(file).catch((error: NodeJS.ErrnoException) => {
      const why = error.code === 'ENOENT' ? 'no such file' : error.code === 'EISDIR' ? 'is a folder' : error.message
      throw new UserError(`${file}: ${why}`, {code: 'IMAGE_UNREADABLE', exit: 'data'})
    })
    return {file, input: await preprocessImage(bytes, predictor.preprocessing, file, limits, {fastPath: !threadPool})}
  } catch (error) {
    if (!(error instanceof UserError)) throw error
    return {file, error: error.message}
  }
}

/** Decodes every file of a batch at once: sharp queues them on the thread pool. */
function decodeBatch(files: string[], predictor: Predictor, limits: ImageLimits, threadPool: boolean): Promise<Decoded[]> {
  return Promise.all(files.map((file) => decodeFile(file, predictor, limits, threadPool)))
}

export async function predictFiles(options: PredictFilesOptions): Promise<{predictions: Prediction[]; failed: PredictFailure[]; stats: PredictStats}> {
  const {predictor, files} = options
  const batchSize = options.batchSize ?? 64
  const limits = options.limits ?? DEFAULT_IMAGE_LIMITS
  const threadPool = options.threadPoolDecode ?? true
  const size = predictor.inputShape[0] * predictor.inputShape[1] * predictor.inputShape[2]
  const predictions: Prediction[] = []
  const failed: PredictFailure[] = []
  const started = performance.now()
  let inferenceMs = 0
  let next: Promise<Decoded[]> | undefined = files.length ? decodeBatch(files.slice(0, batchSize), predictor, limits, threadPool) : undefined
  for (let start = 0; next !== undefined; start += batchSize) {
    const decoded = await next
    // The next batch is queued for decoding before this one runs, so that the two overlap.
    const following = start + batchSize
    next = following < files.length ? decodeBatch(files.slice(following, following + batchSize), predictor, limits, threadPool) : undefined
    const ok = decoded.filter((d): d is {file: string; input: Float32Array} => 'input' in d)
    let probabilities: Float32Array = new Float32Array(0)
    if (ok.length) {
      const input = new Float32Array(ok.length * size)
      ok.forEach((d, i) => input.set(d.input, i * size))
      const t0 = performance.now()
      probabilities = await predictor.predictBatch(input, ok.length)
      inferenceMs += performance.now() - t0
    }
    let row = 0
    for (const d of decoded) {
      const result = 'input' in d ? {file: d.file, top: predictor.topK(probabilities, row++, options.topK)} : d
      if ('top' in result) predictions.push(result)
      else failed.push(result)
      options.onResult?.(result)
    }
  }
  const seconds = (performance.now() - started) / 1000
  return {
    predictions,
    failed,
    stats: {images: predictions.length, seconds, imagesPerSec: seconds > 0 ? predictions.length / seconds : 0, inferenceSeconds: inferenceMs / 1000, batchSize},
  }
}
