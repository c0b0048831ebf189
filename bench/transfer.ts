// Transfer learning, as evidence in one JSON object (`npm run bench:transfer`):
// - few-shot: a base trained by `ml train` on MNIST digits 0-4, then digits 5-9 from 10 labelled
//   images per class, with that base vs the same network from random weights;
// - photos: the MobileNetV2 base (npm run base:mobilenet) frozen vs a small network from scratch on
//   synthetic 224x224 RGB photos (textures and shapes on noisy backgrounds), with wall times;
// - speed: base features/s on tfjs wasm and on onnxruntime-node (224x224x3, batch 32), the engine
//   `ml train` uses vs raw onnxruntime, head images/s on cached features, 1,000 photos end to end.
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import * as tf from '../src/lib/engine/tf.js'
import * as ort from 'onnxruntime-node'
import {stringify} from 'yaml'
import {loadConfig} from '../src/lib/config/load.js'
import {BaseSchema} from '../src/lib/config/schema.js'
import {runIngest} from '../src/lib/data/ingest.js'
import {readMnist, mnistPng} from '../src/lib/data/mnist.js'
import {loadSplit, readManifest} from '../src/lib/data/store.js'
import {initEngine} from '../src/lib/engine/backend.js'
import {convertToOnnx} from '../src/lib/export/onnx.js'
import type {ModelJson} from '../src/lib/export/quantize.js'
import {serialiseModel} from '../src/lib/model/artifact.js'
import {loadBase} from '../src/lib/model/base.js'
import {evaluateRun} from '../src/lib/train/evaluate-run.js'
import {cachedFeatures, featureSessionOptions, onnxExtractor} from '../src/lib/train/feature-cache.js'
import {runTraining} from '../src/lib/train/trainer.js'
import {ensureMobileNetBase, MOBILENET_FEATURES} from '../scripts/nsfwjs-base.js'
import {writePhotoFolders} from '../scripts/synthetic-photos.js'

const log = (...parts: unknown[]) => process.stderr.write(parts.join(' ') + '\n')
const round = (x: number, digits = 3) => Number(x.toFixed(digits))

async function writeConfig(dir: string, name: string, config: object): Promise<string> {
  const file = path.join(dir, `${name}.yaml`)
  await writeFile(file, stringify({name, ...config}))
  return file
}

async function train(file: string, runId: string) {
  const loaded = await loadConfig(file)
  const started = performance.now()
  const summary = await runTraining({loaded, runId})
  const seconds = (performance.now() - started) / 1000
  const evaluation = await evaluateRun({loaded, run: runId})
  return {summary, seconds, accuracy: evaluation.accuracy}
}

/** MNIST digits `digits` as PNG class folders: up to `perClass` of each from `split`. */
async function digitFolders(dir: string, split: 'train' | 'test', digits: number[], perClass: number, skip = 0): Promise<void> {
  const sample = await readMnist(split, 0, 20_000)
  const counts = new Map<number, number>()
  const seen = new Map<number, number>()
  for (let i = 0; i < sample.count; i++) {
    const label = sample.labels[i]!
    if (!digits.includes(label)) continue
    const s = (seen.get(label) ?? 0) + 1
    seen.set(label, s)
    if (s <= skip) continue
    const n = counts.get(label) ?? 0
    if (n >= perClass) continue
    counts.set(label, n + 1)
    await mkdir(path.join(dir, String(label)), {recursive: true})
    await writeFile(path.join(dir, String(label), `${split}-${i}.png`), await mnistPng(sample, i))
  }
}

async function fewShot(root: string) {
  const dir = path.join(root, 'few-shot')
  await digitFolders(path.join(dir, 'base-digits'), 'train', [0, 1, 2, 3, 4], 800)
  await digitFolders(path.join(dir, 'few'), 'train', [5, 6, 7, 8, 9], 10)
  await digitFolders(path.join(dir, 'few-test'), 'test', [5, 6, 7, 8, 9], 200)
  const image = {width: 28, height: 28, channels: 1}
  const common = {train: {batchSize: 32, backend: 'wasm', seed: 5, runs: 'runs', learningRate: 0.002}}
  const baseFile = await writeConfig(dir, 'digits04', {
    data: {sources: [{type: 'folder', path: 'base-digits'}], image, split: {validation: 0, test: 0.1, seed: 0}, store: 'store-04'},
    model: {preset: 'cnn-small'},
    ...common,
    train: {...common.train, epochs: 3},
  })
  const loadedBase = await loadConfig(baseFile)
  await runIngest({config: loadedBase.config, baseDir: loadedBase.baseDir})
  const base = await train(baseFile, 'base')
  log(`few-shot base (digits 0-4): test accuracy ${base.accuracy.toFixed(3)} in ${base.seconds.toFixed(1)} s`)
  const data = {
    sources: [
      {type: 'folder', path: 'few'},
      {type: 'folder', path: 'few-test', split: 'test'},
    ],
    image,
    split: {validation: 0, test: 0, seed: 0},
    store: 'store-59',
  }
  const withBase = await writeConfig(dir, 'few-base', {data, model: {base: {source: path.join(base.summary.runDir, 'model')}, head: {dropout: 0.2}}, ...common, train: {...common.train, epochs: 40, learningRate: 0.005}})
  const loadedFew = await loadConfig(withBase)
  await runIngest({config: loadedFew.config, baseDir: loadedFew.baseDir})
  const transfer = await train(withBase, 'few-base')
  // The same network (cnn-small's layers + the softmax classifier), from random weights.
  const scratchFile = await writeConfig(dir, 'few-scratch', {data, model: {preset: 'cnn-small'}, ...common, train: {...common.train, epochs: 40, learningRate: 0.005}})
  const scratch = await train(scratchFile, 'few-scratch')
  log(`few-shot digits 5-9 (10 per class): base ${transfer.accuracy.toFixed(3)}, scratch ${scratch.accuracy.toFixed(3)}`)
  return {fewShotBaseAccuracy: round(transfer.accuracy), fewShotScratchAccuracy: round(scratch.accuracy), fewShotBaseNetworkAccuracy04: round(base.accuracy)}
}

async function photos(root: string, mobilenet: string) {
  const dir = path.join(root, 'photos')
  await writePhotoFolders(path.join(dir, 'train'), {perClass: 40, size: 224, classes: 4, seed: 1})
  await writePhotoFolders(path.join(dir, 'test'), {perClass: 15, size: 224, classes: 4, seed: 2})
  const data = {
    sources: [
      {type: 'folder', path: 'train'},
      {type: 'folder', path: 'test', split: 'test'},
    ],
    image: {width: 224, height: 224, channels: 3},
    split: {validation: 0, test: 0, seed: 0},
    store: 'store',
  }
  const train_ = {batchSize: 16, backend: 'wasm', seed: 5, runs: 'runs'}
  const baseFile = await writeConfig(dir, 'photos-base', {data, model: {base: {source: mobilenet}, head: {dropout: 0.2}}, train: {...train_, epochs: 15, learningRate: 0.003}})
  const loaded = await loadConfig(baseFile)
  await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  const withBase = await train(baseFile, 'base')
  log(`photos: frozen MobileNetV2 ${withBase.accuracy.toFixed(3)} in ${withBase.seconds.toFixed(1)} s (train)`)
  const scratchFile = await writeConfig(dir, 'photos-scratch', {data, model: {preset: 'cnn-tiny'}, train: {...train_, epochs: 5, learningRate: 0.002}})
  const scratch = await train(scratchFile, 'scratch')
  log(`photos: cnn-tiny from scratch ${scratch.accuracy.toFixed(3)} in ${scratch.seconds.toFixed(1)} s (train)`)
  return {
    photoBaseAccuracy: round(withBase.accuracy),
    photoScratchAccuracy: round(scratch.accuracy),
    photoBaseTrainSeconds: round(withBase.seconds, 1),
    photoScratchTrainSeconds: round(scratch.seconds, 1),
    headImagesPerSec: round(withBase.summary.imagesPerSec, 1),
    store: path.join(dir, 'store'),
  }
}

/** A photo-size store for the speed measurement alone (`--only speed`): ingested, not trained on. */
async function speedStore(root: string, count: number): Promise<string> {
  const dir = path.join(root, 'speed')
  await writePhotoFolders(path.join(dir, 'photos'), {perClass: Math.ceil(count / 4), size: 224, classes: 4, seed: 4})
  const file = await writeConfig(dir, 'speed', {
    data: {sources: [{type: 'folder', path: 'photos'}], image: {width: 224, height: 224, channels: 3}, split: {validation: 0, test: 0, seed: 0}, store: 'store'},
    model: {preset: 'cnn-tiny'},
  })
  const loaded = await loadConfig(file)
  await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  return path.join(dir, 'store')
}

/**
 * Base features/s: tfjs wasm, raw onnxruntime (the converted base, one session with the same options,
 * warmed up, batches of 32 already in float32), and the cache's own extraction path (what ml train
 * runs on a cache miss: decoded split -> extractor -> cache entry), over the same number of images.
 */
async function featureSpeed(root: string, mobilenet: string, store: string) {
  const base = await loadBase(BaseSchema.parse({source: mobilenet, output: MOBILENET_FEATURES}), {width: 224, height: 224, channels: 3, fit: 'fill'})
  const batch = 32
  const x = tf.randomUniform([batch, 224, 224, 3], 0, 1, 'float32', 1) as tf.Tensor4D
  tf.dispose(base.extract(x)) // warm-up
  let started = performance.now()
  const rounds = 2
  for (let i = 0; i < rounds; i++) await base.extract(x).data()
  const wasm = (rounds * batch) / ((performance.now() - started) / 1000)
  const manifest = await readManifest(store)
  const train = await loadSplit(store, 'train', manifest)
  const validation = await loadSplit(store, 'validation', manifest)
  const files = await serialiseModel(base.features!)
  const session = await ort.InferenceSession.create(
    convertToOnnx({modelJson: files.modelJson as unknown as ModelJson, weights: files.weights, name: 'features', producerVersion: 'bench', metadata: {}}),
    featureSessionOptions(),
  )
  const input = new ort.Tensor('float32', (await x.data()) as Float32Array, [batch, 224, 224, 3])
  await session.run({image: input})
  const rawBatches = Math.max(2, Math.ceil((train.count + validation.count) / batch))
  started = performance.now()
  for (let i = 0; i < rawBatches; i++) await session.run({image: input})
  const onnx = (rawBatches * batch) / ((performance.now() - started) / 1000)
  await session.release()
  const cached = await cachedFeatures({
    key: {dataset: `bench-${Date.now()}`, base: base.sha256, output: base.output, inputRange: base.inputRange},
    featureSize: base.featureSize,
    train,
    validation,
    extractor: () => onnxExtractor(base.features!),
    cacheRoot: path.join(root, 'speed-cache'),
  })
  tf.dispose(x)
  base.dispose()
  log(`features/s: wasm ${wasm.toFixed(1)}, onnxruntime ${onnx.toFixed(1)} (${rawBatches} batches of ${batch}), ml train's path ${cached.imagesPerSec.toFixed(1)} (${cached.engine}, ${train.count + validation.count} images)`)
  return {featureImagesPerSecWasm: round(wasm, 1), featureImagesPerSecOnnx: round(onnx, 1), featureImagesPerSecTrain: round(cached.imagesPerSec, 1), featureEngineRatio: round(cached.imagesPerSec / onnx), featureEngine: cached.engine}
}

/** 1,000 photos from folder to trained model: ingest + train with the frozen base (cold feature cache). */
async function photos1000(root: string, mobilenet: string) {
  const dir = path.join(root, 'photos1000')
  await writePhotoFolders(path.join(dir, 'photos'), {perClass: 250, size: 320, classes: 4, seed: 3})
  const file = await writeConfig(dir, 'photos1000', {
    data: {sources: [{type: 'folder', path: 'photos'}], image: {width: 224, height: 224, channels: 3}, split: {validation: 0.1, test: 0, seed: 0}, store: 'store'},
    model: {base: {source: mobilenet}, head: {dropout: 0.2}},
    train: {epochs: 10, batchSize: 32, backend: 'wasm', seed: 5, runs: 'runs', learningRate: 0.003},
  })
  const loaded = await loadConfig(file)
  const started = performance.now()
  await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  const ingested = (performance.now() - started) / 1000
  const summary = await runTraining({loaded, runId: 'photos1000'})
  const seconds = (performance.now() - started) / 1000
  log(`1000 photos: ingest ${ingested.toFixed(1)} s, total ${seconds.toFixed(1)} s, validation accuracy ${summary.valAccuracy?.toFixed(3)}`)
  return {photos1000Seconds: round(seconds, 1), photos1000IngestSeconds: round(ingested, 1), photos1000ValAccuracy: round(summary.valAccuracy ?? Number.NaN)}
}

const root = await mkdtemp(path.join(os.tmpdir(), 'ml-bench-transfer-'))
const previousCache = process.env.ML_CACHE_DIR
// A cold cache: every feature extraction below is measured, none is a hit from an earlier run.
process.env.ML_CACHE_DIR = path.join(root, 'cache')
try {
  await initEngine('wasm')
  const mobilenet = await ensureMobileNetBase()
  const machine = () => `${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(2)} at the end (shared: absolute figures are noisy)`
  // --only speed | photos1000: one part alone (a few minutes each), e.g. for tuning the extraction path.
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined
  if (only !== undefined && only !== 'speed' && only !== 'photos1000') throw new Error(`--only ${only}: the quick modes are --only speed and --only photos1000`)
  if (only === 'speed') {
    const speed = await featureSpeed(root, mobilenet, await speedStore(root, Number(process.env.BENCH_SPEED_IMAGES ?? 320)))
    process.stdout.write(JSON.stringify({...speed, targets: {featureEngineRatio: 0.8}, machine: machine()}) + '\n')
  } else if (only === 'photos1000') {
    process.stdout.write(JSON.stringify({...(await photos1000(root, mobilenet)), targets: {photos1000Seconds: 300}, machine: machine()}) + '\n')
  } else {
    const few = await fewShot(root)
    const photo = await photos(root, mobilenet)
    const speed = await featureSpeed(root, mobilenet, photo.store)
    const big = await photos1000(root, mobilenet)
    const {store: _store, ...photoFields} = photo
    const targets = {fewShotMargin: 0.1, photos1000Seconds: 300, featureEngineRatio: 0.8}
    process.stdout.write(JSON.stringify({...few, ...photoFields, ...speed, ...big, targets, machine: machine()}) + '\n')
  }
} finally {
  if (previousCache === undefined) delete process.env.ML_CACHE_DIR
  else process.env.ML_CACHE_DIR = previousCache
  await rm(root, {recursive: true, force: true})
}
