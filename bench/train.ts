// Training and inference throughput of the Keras "simple MNIST convnet" (the cnn-small preset), printed
// as one JSON object on stdout: how close training through the trainer (`ml train`'s code path, real
// MNIST digits) comes to inference of the same model, how 2 data-parallel workers scale (whole runs,
// start-up included), and how the same convnet fares in Keras (tensorflow-cpu) reading the same shards.
import {execFile} from 'node:child_process'
import {existsSync} from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'
import * as tf from '../src/lib/engine/tf.js'
import {initEngine, type EnginePreference} from '../src/lib/engine/backend.js'
import {buildModel as buildPreset} from '../src/lib/model/build.js'
import {PYTHON} from '../test/peers/support/python.js'

const BATCH = 128
const SEED = 42
/** Timed rounds; each times one training step, then three inference batches. */
const ROUNDS = 10
const INFER_BATCHES_PER_ROUND = 3
/** The pure-JS backend needs minutes per step at BATCH, so it trains on smaller batches. */
const CPU_BATCH = 8
const CPU_TIMED_STEPS = 2
/** Trainer runs per worker count, and epochs per run (of 3,840 digits: 30 steps). */
const WORKER_ROUNDS = 3
const WORKER_EPOCHS = 4

interface BenchResult {
  backend: string
  batchSize: number
  /** The trainer, 1 worker: median steady epoch (the first, with its warm-up, left out) of each run. */
  trainImagesPerSec: number
  /** model.predict of the same cnn-small model, measured between the trainer runs. */
  inferImagesPerSec: number
  /** trainImagesPerSec / (inferImagesPerSec / 3): a training step costs about three forward passes. */
  limitRatio: number
  /** trainOnBatch of a hand-built copy of the convnet on random data: the kernels alone, no trainer. */
  kernelTrainImagesPerSec: number
  cpuBackendImagesPerSec: number
  /** Batch size of the cpu-backend measurement (images/s barely depend on it there). */
  cpuBackendBatchSize: number
  /** The real trainer (`ml train` code path) on real MNIST digits, 1 and 2 data-parallel workers. */
  workers1ImagesPerSec: number
  workers2ImagesPerSec: number
  /**
   * Median over rounds of the whole-run images/s of 2 workers over 1 (each pair back to back): every
   * epoch's images over the run's wall time, start-up included (dataset load, worker processes, warm-up).
   */
  scaling2: number
  /** The same ratio of steady epochs only (the first left out). */
  scaling2SteadyState: number
  /** Whole-run images/s (start-up included) of 1 and 2 workers. */
  workers1RunImagesPerSec: number
  workers2RunImagesPerSec: number
  /** The same convnet in Keras (tensorflow-cpu), batch 128, on the same shards through tf.data: steady epochs. */
  kerasImagesPerSec: number | null
  /** Keras whole runs, start-up included (Python and TensorFlow import, reading the shards). */
  kerasRunImagesPerSec: number | null
  /** trainImagesPerSec / kerasImagesPerSec (1 worker), and workers2ImagesPerSec / kerasImagesPerSec (train.devices: 2). */
  vsKeras: number | null
  vsKeras2: number | null
  /** Why Keras was not measured (the Python peer is not installed: scripts/peers/python.sh). */
  kerasSkipped?: string
  peakRssMb: number
}

function buildModel(): tf.LayersModel {
  const init = (offset: number) => tf.initializers.glorotUniform({seed: SEED + offset})
  const model = tf.sequential()
  model.add(tf.layers.conv2d({inputShape: [28, 28, 1], filters: 32, kernelSize: 3, activation: 'relu', kernelInitializer: init(1)}))
  model.add(tf.layers.maxPooling2d({poolSize: 2}))
  model.add(tf.layers.conv2d({filters: 64, kernelSize: 3, activation: 'relu', kernelInitializer: init(2)}))
  model.add(tf.layers.maxPooling2d({poolSize: 2}))
  model.add(tf.layers.flatten())
  model.add(tf.layers.dropout({rate: 0.5, seed: SEED}))
  model.add(tf.layers.dense({units: 10, activation: 'softmax', kernelInitializer: init(3)}))
  model.compile({optimizer: tf.train.adam(), loss: 'categoricalCrossentropy'})
  return model
}

function randomBatch(size: number): {x: tf.Tensor, y: tf.Tensor} {
  return tf.tidy(() => {
    const x = tf.randomUniform([size, 28, 28, 1], 0, 1, 'float32', SEED)
    const labels = tf.randomUniform([size], 0, 10, 'int32', SEED + 1)
    return {x, y: tf.oneHot(labels, 10).toFloat()}
  })
}

async function trainSteps(model: tf.LayersModel, x: tf.Tensor, y: tf.Tensor, steps: number): Promise<number> {
  const start = performance.now()
  for (let i = 0; i < steps; i++) await model.trainOnBatch(x, y)
  return (performance.now() - start) / 1000
}

function inferBatches(model: tf.LayersModel, x: tf.Tensor, batches: number): number {
  const start = performance.now()
  for (let i = 0; i < batches; i++) {
    const out = model.predict(x) as tf.Tensor
    out.dataSync()
    out.dispose()
  }
  return (performance.now() - start) / 1000
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/**
 * Images/s of training and inference on the engine's backend. The two alternate in short rounds
 * and each keeps its median round, so that load from other processes skews neither.
 */
async function measureBackend(): Promise<{train: number, infer: number}> {
  const model = buildModel()
  const {x, y} = randomBatch(BATCH)
  await trainSteps(model, x, y, 3)
  inferBatches(model, x, 3)
  const train: number[] = []
  const infer: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    train.push(BATCH / (await trainSteps(model, x, y, 1)))
    infer.push((INFER_BATCHES_PER_ROUND * BATCH) / inferBatches(model, x, INFER_BATCHES_PER_ROUND))
  }
  tf.dispose([x, y])
  model.dispose()
  return {train: median(train), infer: median(infer)}
}

/** Training images/s of the pure-JS cpu backend, kept short: a step takes seconds even at CPU_BATCH. */
async function measureCpu(): Promise<number> {
  const model = buildModel()
  const warm = randomBatch(2)
  await trainSteps(model, warm.x, warm.y, 1)
  const {x, y} = randomBatch(CPU_BATCH)
  const seconds = await trainSteps(model, x, y, CPU_TIMED_STEPS)
  tf.dispose([x, y, warm.x, warm.y])
  model.dispose()
  return (CPU_TIMED_STEPS * CPU_BATCH) / seconds
}

interface WorkerRates {
  /** Steady epochs (median of each run's epochs after the first), then median over runs. */
  one: number
  two: number
  scalingSteady: number
  /** Whole runs: every epoch's images over the run's wall time. */
  oneRun: number
  twoRun: number
  scalingRun: number
  infer: number
  keras?: {steady: number; run: number}
  kerasSkipped?: string
}

/** Images/s of model.predict on a cnn-small model from the product's builder, median of short rounds. */
function measureInference(x: tf.Tensor): number {
  const model = buildPreset({preset: 'cnn-small'} as Parameters<typeof buildPreset>[0], {width: 28, height: 28, channels: 1, fit: 'fill'} as Parameters<typeof buildPreset>[1], 10, SEED)
  inferBatches(model, x, 2)
  const rates: number[] = []
  for (let round = 0; round < ROUNDS; round++) rates.push((INFER_BATCHES_PER_ROUND * BATCH) / inferBatches(model, x, INFER_BATCHES_PER_ROUND))
  model.dispose()
  return median(rates)
}

/** One Keras run of bench/peers/keras_train.py on the store; undefined when the Python peer is missing. */
async function kerasRun(store: string): Promise<{steady: number; run: number}> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'peers', 'keras_train.py')
  const {stdout} = await promisify(execFile)(PYTHON, [script, store, '--epochs', String(WORKER_EPOCHS), '--batch', String(BATCH)], {
    env: {...process.env, TF_CPP_MIN_LOG_LEVEL: '2', PYTHONHASHSEED: '0'},
    maxBuffer: 16 * 1024 * 1024,
  })
  const result = JSON.parse(stdout) as {steadyImagesPerSec: number; runImagesPerSec: number}
  return {steady: result.steadyImagesPerSec, run: result.runImagesPerSec}
}

/**
 * The trainer with 1 and 2 worker processes on the same real MNIST dataset (cnn-small, batch 128),
 * then Keras on the same shards, in rounds so that machine load affects all alike; inference of the
 * same model is measured after each 1-worker run. Each run is timed whole (start-up included) and
 * per epoch (steady state: the first epoch, with the warm-up of fresh workers, left out).
 */
async function measureWorkers(): Promise<WorkerRates> {
  const {mkdtemp, rm, writeFile} = await import('node:fs/promises')
  const os = await import('node:os')
  const {materialiseMnist} = await import('../src/lib/data/mnist.js')
  const {loadConfig} = await import('../src/lib/config/load.js')
  const {runIngest} = await import('../src/lib/data/ingest.js')
  const {runTraining} = await import('../src/lib/train/trainer.js')
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-bench-train-'))
  const x = tf.randomUniform([BATCH, 28, 28, 1], 0, 1, 'float32', SEED)
  try {
    await materialiseMnist(path.join(dir, 'train'), 'train', 0, 3840)
    const configFor = async (devices: number) => {
      const file = path.join(dir, `ml-${devices}.yaml`)
      await writeFile(
        file,
        JSON.stringify({
          name: 'bench',
          data: {sources: [{type: 'folder', path: 'train'}], split: {validation: 0, test: 0}, store: 'dataset'},
          model: {preset: 'cnn-small'},
          train: {epochs: WORKER_EPOCHS, batchSize: BATCH, backend: 'wasm', devices, runs: 'runs'},
        }),
      )
      return loadConfig(file)
    }
    const one = await configFor(1)
    const two = await configFor(2)
    const ingested = await runIngest({config: one.config, baseDir: one.baseDir})
    const images = ingested.total
    const keras = existsSync(PYTHON) ? undefined : `the Python peer is not installed (${PYTHON}): run scripts/peers/python.sh`
    const steady: Record<number, number[]> = {1: [], 2: []}
    const whole: Record<number, number[]> = {1: [], 2: []}
    const infer: number[] = []
    const kerasSteady: number[] = []
    const kerasWhole: number[] = []
    let run = 0
    for (let round = 0; round < WORKER_ROUNDS; round++) {
      for (const [devices, loaded] of [[1, one], [2, two]] as const) {
        const epochs: number[] = []
        const started = performance.now()
        await runTraining({loaded, runId: `r${run++}`, onEvent: (event) => event.type === 'epoch' && epochs.push(event.metrics.imagesPerSec)})
        whole[devices]!.push((images * WORKER_EPOCHS) / ((performance.now() - started) / 1000))
        steady[devices]!.push(median(epochs.slice(1)))
        if (devices === 1) infer.push(measureInference(x))
      }
      if (!keras) {
        const k = await kerasRun(path.join(dir, 'dataset'))
        kerasSteady.push(k.steady)
        kerasWhole.push(k.run)
      }
    }
    // Scaling from the ratio within each round (the two runs back to back), then the median.
    const ratio = (r: Record<number, number[]>) => median(r[2]!.map((two, i) => two / r[1]![i]!))
    return {
      one: median(steady[1]!),
      two: median(steady[2]!),
      scalingSteady: ratio(steady),
      oneRun: median(whole[1]!),
      twoRun: median(whole[2]!),
      scalingRun: ratio(whole),
      infer: median(infer),
      ...(keras ? {kerasSkipped: keras} : {keras: {steady: median(kerasSteady), run: median(kerasWhole)}}),
    }
  } finally {
    x.dispose()
    await rm(dir, {recursive: true, force: true})
  }
}

async function main(): Promise<void> {
  const preference = (process.argv[2] ?? 'auto') as EnginePreference
  const engine = await initEngine(preference)
  const {train: kernelTrain} = await measureBackend()
  await initEngine('cpu')
  const cpu = await measureCpu()
  await initEngine(preference)
  const workers = await measureWorkers()
  const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits
  const keras = workers.keras
  const result: BenchResult = {
    backend: engine.backend,
    batchSize: BATCH,
    trainImagesPerSec: round(workers.one),
    inferImagesPerSec: round(workers.infer),
    limitRatio: round(workers.one / (workers.infer / 3), 3),
    kernelTrainImagesPerSec: round(kernelTrain),
    cpuBackendImagesPerSec: round(cpu, 2),
    cpuBackendBatchSize: CPU_BATCH,
    workers1ImagesPerSec: round(workers.one),
    workers2ImagesPerSec: round(workers.two),
    scaling2: round(workers.scalingRun, 3),
    scaling2SteadyState: round(workers.scalingSteady, 3),
    workers1RunImagesPerSec: round(workers.oneRun),
    workers2RunImagesPerSec: round(workers.twoRun),
    kerasImagesPerSec: keras ? round(keras.steady) : null,
    kerasRunImagesPerSec: keras ? round(keras.run) : null,
    vsKeras: keras ? round(workers.one / keras.steady, 3) : null,
    vsKeras2: keras ? round(workers.two / keras.steady, 3) : null,
    ...(workers.kerasSkipped ? {kerasSkipped: workers.kerasSkipped} : {}),
    peakRssMb: round(process.resourceUsage().maxRSS / 1024),
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exitCode = 1
})
