// `ml predict` and `ml evaluate` on 10,000 MNIST images as one JSON object: images/s per engine, and
// whether decoding (sharp, in the thread pool) overlaps inference: the predict pipeline's wall time
// against the slower of decoding alone and inference alone (target: at most 1.25x), and the same for
// `ml evaluate` (stored shards decoded on the main thread while the engine's worker scores the last one).
import {readFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {loadConfig} from '../src/lib/config/load.js'
import {materialiseMnist} from '../src/lib/data/mnist.js'
import {initEngine} from '../src/lib/engine/backend.js'
import {collectInputs} from '../src/lib/predict/files.js'
import {predictFiles} from '../src/lib/predict/run.js'
import {loadSplit} from '../src/lib/data/store.js'
import {openModel} from '../src/lib/model/runtimes/index.js'
import {moveToWorker, preprocessImage, Predictor} from '../src/lib/serve/predictor.js'
import {predictSplitWith} from '../src/lib/train/evaluate.js'
import {evaluateRun} from '../src/lib/train/evaluate-run.js'
import {tempDir} from '../test/support/fixtures.js'
import {trainServeModel} from '../test/support/serve-fixtures.js'

// --images <n> (default 10,000) and --only predict|evaluate keep a rerun short.
const argValue = (name: string) => {
  const at = process.argv.indexOf(name)
  return at > 0 ? process.argv[at + 1] : undefined
}
const IMAGES = Number(argValue('--images') ?? 10_000)
const ONLY = argValue('--only') as 'predict' | 'evaluate' | undefined
const BATCH = 64
const TARGET_OVERLAP_RATIO = 1.25

const note = (message: string) => process.stderr.write(`[bench:predict] ${message}\n`)
const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits

/** Seconds to read and decode every file in batches, as the pipeline does, with no inference. */
async function decodeAlone(files: string[], predictor: Predictor): Promise<{seconds: number; floats: Float32Array[]}> {
  const started = performance.now()
  const floats: Float32Array[] = []
  for (let i = 0; i < files.length; i += BATCH) {
    const batch = await Promise.all(files.slice(i, i + BATCH).map(async (file) => preprocessImage(await readFile(file), predictor.preprocessing, file, undefined, {fastPath: false})))
    floats.push(...batch)
  }
  return {seconds: (performance.now() - started) / 1000, floats}
}

/** Seconds to run every decoded image through the engine in batches, with nothing else to do. */
async function inferenceAlone(floats: Float32Array[], predictor: Predictor): Promise<number> {
  const size = floats[0]!.length
  const started = performance.now()
  for (let i = 0; i < floats.length; i += BATCH) {
    const n = Math.min(BATCH, floats.length - i)
    const input = new Float32Array(n * size)
    for (let j = 0; j < n; j++) input.set(floats[i + j]!, j * size)
    await predictor.predictBatch(input, n)
  }
  return (performance.now() - started) / 1000
}

async function predictBench(files: string[], versionDir: string, runtime: 'onnx' | 'tfjs') {
  const predictor = await Predictor.load(versionDir, {runtime, worker: {engine: 'wasm'}})
  try {
    note(`${predictor.engine.label}: decoding alone, inference alone, then both overlapped (${files.length} images)`)
    const decoded = await decodeAlone(files, predictor)
    const inference = await inferenceAlone(decoded.floats, predictor)
    const pipeline = await predictFiles({predictor, files, topK: 1, batchSize: BATCH})
    if (pipeline.failed.length) throw new Error(`${pipeline.failed.length} images failed: ${pipeline.failed[0]!.error}`)
    const slower = Math.max(decoded.seconds, inference)
    return {
      engine: predictor.engine.label,
      imagesPerSec: Math.round(pipeline.stats.imagesPerSec),
      seconds: round(pipeline.stats.seconds),
      decodeAloneSeconds: round(decoded.seconds),
      inferenceAloneSeconds: round(inference),
      // Wall time over the slower of the two alone: 1 is perfect overlap, decode + inference / slower is none.
      overlapRatio: round(pipeline.stats.seconds / slower),
      noOverlapRatio: round((decoded.seconds + inference) / slower),
      targetOverlapRatio: TARGET_OVERLAP_RATIO,
      met: pipeline.stats.seconds / slower <= TARGET_OVERLAP_RATIO,
    }
  } finally {
    predictor.dispose()
  }
}

async function main(): Promise<void> {
  const started = performance.now()
  const loadAverage = os.loadavg()[0]!
  const {dir, cleanup} = await tempDir('ml-bench-predict-')
  try {
    note(`training cnn-small on 1000 real MNIST digits (1 epoch), ${IMAGES} test digits in the dataset, exporting it`)
    const model = await trainServeModel(dir, {preset: 'cnn-small', train: 1000, test: IMAGES, epochs: 1, batchSize: 64, name: 'mnist'})
    const loaded = await loadConfig(model.config)
    await initEngine(loaded.config.train.backend)
    const folder = path.join(dir, 'predict-input')
    await materialiseMnist(folder, 'test', 0, IMAGES)
    const files = (await collectInputs([folder])).files.filter((f): f is string => typeof f === 'string')

    const onnx = ONLY === 'evaluate' ? undefined : await predictBench(files, model.versionDir, 'onnx')
    const tfjs = ONLY === 'evaluate' ? undefined : await predictBench(files, model.versionDir, 'tfjs')

    note(`ml evaluate on the ${IMAGES}-image test split, per engine`)
    const runDir = path.join(path.dirname(model.config), loaded.config.train.runs, (await readFile(path.join(path.dirname(model.config), loaded.config.train.runs, 'LATEST'), 'utf8')).trim())
    const store = path.resolve(path.dirname(model.config), loaded.config.data.store)
    const evaluate = async (engine: 'onnx' | 'tfjs') => {
      // Alone: the whole split decoded, then the engine (in its worker) on the decoded split.
      let t0 = performance.now()
      const split = await loadSplit(store, 'test')
      const decodeAlone = (performance.now() - t0) / 1000
      const shape: [number, number, number] = [split.height, split.width, split.channels]
      const opened = await openModel(path.join(runDir, 'model'), shape, {runtime: engine})
      const worker = await moveToWorker(opened, path.join(runDir, 'model'), shape, 10, 'wasm')
      t0 = performance.now()
      await predictSplitWith((input, n) => worker.run(input, n), split, 10)
      const inferenceAlone = (performance.now() - t0) / 1000
      worker.dispose()
      const r = await evaluateRun({loaded, engine})
      return {
        engine: r.engine,
        images: r.count,
        accuracy: r.accuracy,
        imagesPerSec: r.imagesPerSec,
        seconds: r.seconds,
        decodeAloneSeconds: round(decodeAlone),
        inferenceAloneSeconds: round(inferenceAlone),
        // Shards are decoded here while the engine's worker scores the previous one.
        overlapRatio: round(r.seconds / Math.max(decodeAlone, inferenceAlone)),
        noOverlapRatio: round((decodeAlone + inferenceAlone) / Math.max(decodeAlone, inferenceAlone)),
        targetOverlapRatio: TARGET_OVERLAP_RATIO,
        met: r.seconds / Math.max(decodeAlone, inferenceAlone) <= TARGET_OVERLAP_RATIO,
      }
    }
    const evaluateOnnx = ONLY === 'predict' ? undefined : await evaluate('onnx')
    const evaluateTfjs = ONLY === 'predict' ? undefined : await evaluate('tfjs')
    const result = {
      images: IMAGES,
      batchSize: BATCH,
      cores: os.availableParallelism(),
      predict: {onnxruntime: onnx, tfjs},
      predictSpeedup: onnx && tfjs ? round(onnx.imagesPerSec / tfjs.imagesPerSec) : undefined,
      evaluate: {onnxruntime: evaluateOnnx, tfjs: evaluateTfjs},
      evaluateSpeedup: evaluateOnnx && evaluateTfjs ? round(evaluateOnnx.imagesPerSec / evaluateTfjs.imagesPerSec) : undefined,
      evaluateInferenceSpeedup: evaluateOnnx && evaluateTfjs ? round(evaluateTfjs.inferenceAloneSeconds / evaluateOnnx.inferenceAloneSeconds) : undefined,
      loadAverageAtStart: round(loadAverage),
      seconds: Math.round((performance.now() - started) / 1000),
    }
    process.stdout.write(JSON.stringify(result, null, 2) + '\n')
  } finally {
    await cleanup()
  }
}

await main()
