// Features of a frozen base, computed once per (dataset version, base, cut point) and kept on disk,
// so that every epoch, and every later run on the same data and base, trains only the head. The
// base runs on the fastest engine for it: onnxruntime-node on the base converted by our own ONNX
// exporter (measured ~4x the tfjs wasm backend on MobileNetV2), tfjs when the conversion is refused.
import {createHash, randomBytes} from 'node:crypto'
import {mkdir, readFile, rename, rm, writeFile} from 'node:fs/promises'
import {availableParallelism} from 'node:os'
import path from 'node:path'
import * as tf from '../engine/tf.js'
import type {DecodedSplit} from '../data/types.js'
import {UserError} from '../errors.js'
import {convertToOnnx, ONNX_INPUT, ONNX_OUTPUT} from '../export/onnx.js'
import type {ModelJson} from '../export/quantize.js'
import {serialiseModel} from '../model/artifact.js'
import {cacheRoot} from '../model/base-source.js'
import {pixelsToFloat} from '../data/image.js'

export type FeatureEngine = 'onnxruntime' | 'tfjs'

/** What identifies a set of features: change any part and they are computed again. */
export interface FeatureKey {
  /** The dataset version's fingerprint (manifest.fingerprint). */
  dataset: string
  /** sha256 of the base's files. */
  base: string
  output: string
  inputRange: [number, number]
}

export interface SplitFeatures {
  /** count * featureSize values, row i = example i of the split. */
  values: Float32Array
  count: number
  featureSize: number
}

export interface FeatureSet {
  train: SplitFeatures
  validation: SplitFeatures
  /** Whether they came from the cache (true) or were computed now. */
  hit: boolean
  /** The engine that computed them (on a hit: the one that did, then). */
  engine: FeatureEngine
  /** Images per second of the extraction (0 on a hit). */
  imagesPerSec: number
  dir: string
}

export function featureKeyHash(key: FeatureKey): string {
  return createHash('sha256').update(JSON.stringify([key.dataset, key.base, key.output, key.inputRange])).digest('hex').slice(0, 32)
}

export function featureCacheDir(key: FeatureKey, root = cacheRoot()): string {
  return path.join(root, 'features', featureKeyHash(key))
}

interface Meta {
  key: FeatureKey
  featureSize: number
  counts: Record<string, number>
  engine: FeatureEngine
  bytes: Record<string, string>
}

const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')

async function readCached(dir: string, key: FeatureKey): Promise<FeatureSet | undefined> {
  let meta: Meta
  try {
    meta = JSON.parse(await readFile(path.join(dir, 'meta.json'), 'utf8')) as Meta
  } catch {
    return undefined
  }
  if (JSON.stringify(meta.key) !== JSON.stringify(key)) return undefined
  const read = async (split: 'train' | 'validation'): Promise<SplitFeatures | undefined> => {
    const bytes = await readFile(path.join(dir, `${split}.f32`)).catch(() => undefined)
    // A damaged entry is recomputed, never trusted.
    if (!bytes || sha(bytes) !== meta.bytes[split] || bytes.byteLength !== meta.counts[split]! * meta.featureSize * 4) return undefined
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))
    return {values, count: meta.counts[split]!, featureSize: meta.featureSize}
  }
  const train = await read('train')
  const validation = await read('validation')
  if (!train || !validation) return undefined
  return {train, validation, hit: true, engine: meta.engine, imagesPerSec: 0, dir}
}

async function writeEntry(dir: string, key: FeatureKey, engine: FeatureEngine, train: SplitFeatures, validation: SplitFeatures): Promise<void> {
  const staging = `${dir}.staging-${process.pid}-${randomBytes(4).toString('hex')}`
  await mkdir(staging, {recursive: true})
  try {
    const bytes: Record<string, string> = {}
    for (const [name, split] of [['train', train], ['validation', validation]] as const) {
      const data = new Uint8Array(split.values.buffer, split.values.byteOffset, split.values.byteLength)
      await writeFile(path.join(staging, `${name}.f32`), data)
      bytes[name] = sha(data)
    }
    const meta: Meta = {key, featureSize: train.featureSize, counts: {train: train.count, validation: validation.count}, engine, bytes}
    await writeFile(path.join(staging, 'meta.json'), JSON.stringify(meta, null, 2) + '\n')
    await rm(dir, {recursive: true, force: true})
    await rename(staging, dir)
  } catch (error) {
    await rm(staging, {recursive: true, force: true})
    // Another worker renamed the same entry into place first: theirs holds the same features.
    if ((error as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (error as NodeJS.ErrnoException).code === 'EEXIST') return
    throw error
  }
}

/**
 * Runs a feature model over batches of decoded images (uint8 pixels, HWC, as the dataset store holds
 * them; the model sees them scaled to [0,1]); returns the features of one batch.
 */
export type BatchExtractor = {engine: FeatureEngine; run(pixels: Uint8Array, count: number): Promise<Float32Array>; close(): Promise<void>}

/**
 * Session options for batch feature extraction: ONNX Runtime's intra-op pool on every core (its
 * default counts physical cores, which a VM may under-report), full graph optimisation (fusing
 * conv + batch-norm + clip), one sequential inter-op thread.
 */
export function featureSessionOptions(threads = availableParallelism()) {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential' as const,
    graphOptimizationLevel: 'all' as const,
  }
}

/**
 * The frozen feature model on onnxruntime-node, through our own exporter: one session for every
 * batch. The graph takes the store's uint8 pixels and scales them itself, so a batch costs no
 * float32 conversion on the JavaScript thread (about a tenth of a MobileNetV2 batch's time on two
 * cores) and a quarter of the bytes copied into the runtime.
 */
export async function onnxExtractor(features: tf.LayersModel): Promise<BatchExtractor> {
  const files = await serialiseModel(features)
  const bytes = convertToOnnx({modelJson: files.modelJson as unknown as ModelJson, weights: files.weights, name: 'features', producerVersion: 'ml', metadata: {}, pixelInput: true})
  const ort = await import('onnxruntime-node')
  const session = await ort.InferenceSession.create(bytes, featureSessionOptions())
  const [, h, w, c] = features.inputs[0]!.shape as number[]
  return {
    engine: 'onnxruntime',
    async run(pixels, count) {
      const out = await session.run({[ONNX_INPUT]: new ort.Tensor('uint8', pixels, [count, h!, w!, c!])})
      // A copy: the output may be a view of native memory released with the tensor.
      const values = Float32Array.from(out[ONNX_OUTPUT]!.data as Float32Array)
      for (const t of Object.values(out)) t.dispose()
      return values
    },
    close: () => session.release(),
  }
}

/** The feature model on the tfjs backend in use. */
export function tfjsExtractor(extract: (images: tf.Tensor4D) => tf.Tensor2D, shape: number[]): BatchExtractor {
  const [h, w, c] = shape
  return {
    engine: 'tfjs',
    async run(pixels, count) {
      const x = tf.tensor4d(pixelsToFloat(pixels), [count, h!, w!, c!])
      const y = extract(x)
      const values = (await y.data()) as Float32Array
      tf.dispose([x, y])
      return values
    },
    close: async () => {},
  }
}

async function extractSplit(split: DecodedSplit, extractor: BatchExtractor, featureSize: number, batchSize: number, onBatch?: (done: number) => void): Promise<SplitFeatures> {
  const values = new Float32Array(split.count * featureSize)
  const imageSize = split.height * split.width * split.channels
  for (let start = 0; start < split.count; start += batchSize) {
    const size = Math.min(batchSize, split.count - start)
    const features = await extractor.run(split.pixels.subarray(start * imageSize, (start + size) * imageSize), size)
    if (features.length !== size * featureSize) {
      throw new UserError(`the base gave ${features.length / size} features per image, expected ${featureSize}`, {code: 'BASE_INVALID', exit: 'training'})
    }
    values.set(features, start * featureSize)
    onBatch?.(start + size)
  }
  return {values, count: split.count, featureSize}
}

export interface CachedFeaturesOptions {
  key: FeatureKey
  featureSize: number
  train: DecodedSplit
  validation: DecodedSplit
  /** Makes the extractor when the cache misses (so that a hit costs no model conversion). */
  extractor: () => Promise<BatchExtractor>
  cacheRoot?: string
  batchSize?: number
}

/** The features of the train and validation splits: from the cache, or computed and cached. */
export async function cachedFeatures(options: CachedFeaturesOptions): Promise<FeatureSet> {
  const dir = featureCacheDir(options.key, options.cacheRoot)
  const hit = await readCached(dir, options.key)
  if (hit) return hit
  const extractor = await options.extractor()
  const started = performance.now()
  try {
    const batchSize = options.batchSize ?? 32
    const train = await extractSplit(options.train, extractor, options.featureSize, batchSize)
    const validation = await extractSplit(options.validation, extractor, options.featureSize, batchSize)
    const seconds = (performance.now() - started) / 1000
    await mkdir(path.dirname(dir), {recursive: true})
    await writeEntry(dir, options.key, extractor.engine, train, validation)
    return {train, validation, hit: false, engine: extractor.engine, imagesPerSec: (train.count + validation.count) / Math.max(seconds, 1e-6), dir}
  } finally {
    await extractor.close()
  }
}
