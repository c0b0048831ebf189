// Training and inference throughput of the Keras "simple MNIST convnet" on random data, printed as
// one JSON object on stdout: how close training on the chosen backend comes to its inference speed.
import * as tf from '@tensorflow/tfjs'
import {initEngine, type EnginePreference} from '../src/lib/engine/backend.js'

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
  trainImagesPerSec: number
  inferImagesPerSec: number
  /** trainImagesPerSec / (inferImagesPerSec / 3): a training step costs about three forward passes. */
  limitRatio: number
  cpuBackendImagesPerSec: number
  /** Batch size of the cpu-backend measurement (images/s barely depend on it there). */
  cpuBackendBatchSize: number
  /** The real trainer (`ml train` code path) on real MNIST digits, 1 and 2 data-parallel workers. */
  workers1ImagesPerSec: number
  workers2ImagesPerSec: number
  /** Median over rounds of workers2 / workers1 images/s, each pair measured back to back. */
  scaling2: number
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

/**
 * Steady-state epoch images/s of the trainer with 1 and 2 worker processes on the same real MNIST
 * dataset (cnn-small, batch 128), alternating the two so that machine load affects both alike. Each
 * run trains WORKER_EPOCHS epochs and the first is left out: it includes the warm-up of fresh
 * worker processes (wasm memory growth, kernel set-up), which the in-process single worker has
 * already done in this benchmark, and which a real run pays once, not per epoch.
 */
async function measureWorkers(): Promise<{one: number; two: number; scaling: number}> {
  const {mkdtemp, rm, writeFile} = await import('node:fs/promises')
  const os = await import('node:os')
  const path = await import('node:path')
  const {materialiseMnist} = await import('../src/lib/data/mnist.js')
  const {loadConfig} = await import('../src/lib/config/load.js')
  const {runIngest} = await import('../src/lib/data/ingest.js')
  const {runTraining} = await import('../src/lib/train/trainer.js')
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-bench-train-'))
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
    await runIngest({config: one.config, baseDir: one.baseDir})
    const rates: Record<number, number[]> = {1: [], 2: []}
    let run = 0
    for (let round = 0; round < WORKER_ROUNDS; round++) {
      for (const [devices, loaded] of [[1, one], [2, two]] as const) {
        const epochs: number[] = []
        await runTraining({loaded, runId: `r${run++}`, onEvent: (event) => event.type === 'epoch' && epochs.push(event.metrics.imagesPerSec)})
        rates[devices]!.push(median(epochs.slice(1)))
      }
    }
    // Scaling from the ratio within each round (the two runs back to back), then the median.
    return {one: median(rates[1]!), two: median(rates[2]!), scaling: median(rates[2]!.map((two, i) => two / rates[1]![i]!))}
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
}

async function main(): Promise<void> {
  const preference = (process.argv[2] ?? 'auto') as EnginePreference
  const engine = await initEngine(preference)
  const {train, infer} = await measureBackend()
  await initEngine('cpu')
  const cpu = await measureCpu()
  await initEngine(preference)
  const workers = await measureWorkers()
  const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits
  const result: BenchResult = {
    backend: engine.backend,
    batchSize: BATCH,
    trainImagesPerSec: round(train),
    inferImagesPerSec: round(infer),
    limitRatio: round(train / (infer / 3), 3),
    cpuBackendImagesPerSec: round(cpu, 2),
    cpuBackendBatchSize: CPU_BATCH,
    workers1ImagesPerSec: round(workers.one),
    workers2ImagesPerSec: round(workers.two),
    scaling2: round(workers.scaling, 3),
    peakRssMb: round(process.resourceUsage().maxRSS / 1024),
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exitCode = 1
})
