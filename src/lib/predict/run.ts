// `ml predict` over many files: files are read and decoded in libuv's thread pool (sharp) a few
// batches ahead while the engine (in its worker thread) runs the current batch, so that decoding and
// inference overlap; results come out in input order, batch by batch, as soon as each is done.
import {readFile} from 'node:fs/promises'
import type {ImageLimits} from '../data/image.js'
import {UserError} from '../errors.js'
import {DEFAULT_IMAGE_LIMITS, type Predictor, type TopK} from '../serve/predictor.js'
import {preprocessImage} from '../serve/predictor.js'
import type {PredictInput} from './files.js'

export interface Prediction {
  file: string
  top: TopK[]
}

export interface PredictFailure {
  file: string
  error: string
}

export interface PredictStats {
  /** Images classified. */
  images: number
  /** Inputs that could not be (missing, unreadable, undecodable). */
  failed: number
  seconds: number
  imagesPerSec: number
  /** Seconds the engine spent running batches (the rest is decoding not hidden behind it). */
  inferenceSeconds: number
  batchSize: number
}

export interface PredictFilesOptions {
  predictor: Predictor
  files: PredictInput[]
  topK: number
  batchSize?: number
  /** Batches decoded ahead of the one the engine runs (default 2). */
  prefetch?: number
  limits?: ImageLimits
  /**
   * Called for each file in input order, as soon as its batch is done; a returned promise is awaited
   * before the next result (an output stream's backpressure), while later batches keep decoding.
   */
  onResult?: (result: Prediction | PredictFailure) => void | Promise<void>
  /** Called after each batch's results (e.g. to flush an output file, so that finished rows are on disk). */
  onBatch?: () => void | Promise<void>
  /** Keep every prediction in the returned array (default true); false when they stream to an output. Failures are always kept. */
  collect?: boolean
  /**
   * Decode with sharp in the thread pool (default), or with the JS decoder on the main thread where
   * it can (serialised with inference): the benchmark compares both.
   */
  threadPoolDecode?: boolean
}

type Decoded = {file: string; input: Float32Array} | PredictFailure

async function decodeFile(input: PredictInput, predictor: Predictor, limits: ImageLimits, threadPool: boolean): Promise<Decoded> {
  if (typeof input !== 'string') return input
  const file = input
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
function decodeBatch(files: PredictInput[], predictor: Predictor, limits: ImageLimits, threadPool: boolean): Promise<Decoded[]> {
  return Promise.all(files.map((file) => decodeFile(file, predictor, limits, threadPool)))
}

export async function predictFiles(options: PredictFilesOptions): Promise<{predictions: Prediction[]; failed: PredictFailure[]; stats: PredictStats}> {
  const {predictor, files} = options
  const batchSize = options.batchSize ?? 64
  const prefetch = Math.max(1, options.prefetch ?? 2)
  const limits = options.limits ?? DEFAULT_IMAGE_LIMITS
  const threadPool = options.threadPoolDecode ?? true
  const collect = options.collect ?? true
  const size = predictor.inputShape[0] * predictor.inputShape[1] * predictor.inputShape[2]
  const predictions: Prediction[] = []
  const failed: PredictFailure[] = []
  let images = 0
  let failures = 0
  const started = performance.now()
  let inferenceMs = 0
  // Batches being decoded, in input order: the engine takes the first while the others decode.
  const ahead: Array<Promise<Decoded[]>> = []
  let queued = 0
  const fill = () => {
    while (ahead.length < prefetch + 1 && queued < files.length) {
      const batch = decodeBatch(files.slice(queued, queued + batchSize), predictor, limits, threadPool)
      // Settled later, in order; a rejection (a bug, not bad input) must not go unhandled meanwhile.
      batch.catch(() => {})
      ahead.push(batch)
      queued += batchSize
    }
  }
  fill()
  while (ahead.length > 0) {
    const decoded = await ahead.shift()!
    fill()
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
      if ('top' in result) {
        images++
        if (collect) predictions.push(result)
      } else {
        failures++
        failed.push(result)
      }
      const pending = options.onResult?.(result)
      if (pending) await pending
    }
    await options.onBatch?.()
  }
  const seconds = (performance.now() - started) / 1000
  return {
    predictions,
    failed,
    stats: {images, failed: failures, seconds, imagesPerSec: seconds > 0 ? images / seconds : 0, inferenceSeconds: inferenceMs / 1000, batchSize},
  }
}
