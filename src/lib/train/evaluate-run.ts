// `ml evaluate`: scores a trained run on a dataset split and records the report in the run directory.
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {SplitName} from '../config/schema.js'
import {loadSplit, readManifest} from '../data/store.js'
import {initEngine} from '../engine/backend.js'
import {joinPath, readJson, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
import type {DecodedSplit} from '../data/types.js'
import {moveToWorker} from '../serve/predictor.js'
import {predictSplitWith, scorePredictions, type EvaluationReport, type Predictions} from './evaluate.js'
import type {RuntimePreference} from '../engine/inference.js'
import {openModel} from '../model/runtimes/index.js'
import {readRunInfo, resolveRunDir, RUN_FILES} from '../model/run-dir.js'

export interface EvaluateOptions {
  loaded: LoadedConfig
  run?: string
  split?: SplitName
  batchSize?: number
  /** Inference engine: auto (ONNX Runtime when the model converts and it is installed), onnx or tfjs. */
  engine?: RuntimePreference
}

export interface EvaluateResult extends EvaluationReport {
  runId: string
  runDir: string
  /** TensorFlow.js's backend (training's, and the engine when TensorFlow.js runs the model). */
  backend: string
  /** What ran the model: "onnxruntime (cpu)", "tfjs (wasm)", ... */
  engine: string
  engineNotes: string[]
  /** Images scored per second of inference, and of the whole evaluation (reading and decoding the split included). */
  imagesPerSec: number
  inferenceImagesPerSec: number
  seconds: number
  decodeSeconds: number
}

export async function evaluateRun(options: EvaluateOptions): Promise<EvaluateResult> {
  const {loaded} = options
  const split = options.split ?? 'test'
  const runDir = await resolveRunDir(resolvePath(loaded, loaded.config.train.runs), options.run)
  const info = await readRunInfo(runDir)
  const store = info.dataset.store
  const manifest = await readManifest(store)
  const labels = await readJson<string[]>(joinPath(runDir, RUN_FILES.labels))
  // New classes appended to the dataset after training would be unknown to this model.
  if (manifest.classes.length !== labels.length || manifest.classes.some((c, i) => c !== labels[i])) {
    throw new UserError(`the dataset's classes changed since run ${info.runId} was trained`, {
      code: 'CLASSES_CHANGED',
      exit: 'data',
      suggestions: ['Train a new model on the current dataset.'],
    })
  }
  const shards = manifest.shards.filter((shard) => shard.split === split)
  const count = shards.reduce((n, shard) => n + shard.count, 0)
  if (count === 0) {
    throw new UserError(`the ${split} split of ${store} is empty`, {
      code: 'SPLIT_EMPTY',
      exit: 'data',
      suggestions: ['Set data.split.test above 0 (or add a source with split: test) and run `ml ingest` again, or pass --split validation.'],
    })
  }
  const engine = await initEngine(loaded.config.train.backend)
  const {height, width, channels} = manifest.image
  const modelDir = joinPath(runDir, RUN_FILES.model)
  const opened = await openModel(modelDir, [height, width, channels], {runtime: options.engine ?? 'auto'})
  const choice = opened.choice
  // The engine runs in a worker thread, so that the next shard is read and decoded here meanwhile.
  const model = await moveToWorker(opened, modelDir, [height, width, channels], labels.length, loaded.config.train.backend)
  const started = performance.now()
  let decodeMs = 0
  let inferenceMs = 0
  const decodeShard = async (index: number) => {
    const t0 = performance.now()
    const chunk = await loadSplit(store, split, {...manifest, shards: [shards[index]!]})
    decodeMs += performance.now() - t0
    return chunk
  }
  const run = async (input: Float32Array, n: number) => {
    const t0 = performance.now()
    const out = await model.run(input, n)
    inferenceMs += performance.now() - t0
    return out
  }
  const parts: Array<{chunk: DecodedSplit; predictions: Predictions}> = []
  try {
    let next: Promise<DecodedSplit> | undefined = decodeShard(0)
    for (let i = 0; next !== undefined; i++) {
      const chunk: DecodedSplit = await next
      next = i + 1 < shards.length ? decodeShard(i + 1) : undefined
      parts.push({chunk, predictions: await predictSplitWith(run, chunk, labels.length, options.batchSize)})
    }
  } finally {
    model.dispose()
  }
  const seconds = (performance.now() - started) / 1000
  const {data, predictions} = joinParts(parts, split, labels.length)
  const report = scorePredictions(data, predictions, labels)
  const result: EvaluateResult = {
    ...report,
    runId: info.runId,
    runDir,
    backend: engine.backend,
    engine: choice.label,
    engineNotes: choice.notes,
    imagesPerSec: Math.round(data.count / seconds),
    inferenceImagesPerSec: Math.round(data.count / (inferenceMs / 1000)),
    seconds: Math.round(seconds * 1000) / 1000,
    decodeSeconds: Math.round(decodeMs) / 1000,
  }
  if (split === 'test') await writeFileAtomic(joinPath(runDir, RUN_FILES.evaluation), JSON.stringify(report, null, 2) + '\n')
  return result
}

/** One split's predictions from its shards' (labels and scores in shard order, as loadSplit reads them). */
function joinParts(parts: Array<{chunk: DecodedSplit; predictions: Predictions}>, split: SplitName, numClasses: number): {data: DecodedSplit; predictions: Predictions} {
  const count = parts.reduce((n, p) => n + p.chunk.count, 0)
  const first = parts[0]!.chunk
  const labels = new Int32Array(count)
  const probabilities = new Float32Array(count * numClasses)
  const predicted = new Int32Array(count)
  let at = 0
  let loss = 0
  let correct = 0
  for (const {chunk, predictions} of parts) {
    labels.set(chunk.labels, at)
    probabilities.set(predictions.probabilities, at * numClasses)
    predicted.set(predictions.predicted, at)
    loss += predictions.loss * chunk.count
    correct += Math.round(predictions.accuracy * chunk.count)
    at += chunk.count
  }
  const data: DecodedSplit = {split, count, height: first.height, width: first.width, channels: first.channels, pixels: new Uint8Array(0), labels, keys: parts.flatMap((p) => p.chunk.keys)}
  return {data, predictions: {probabilities, predicted, loss: loss / count, accuracy: correct / count}}
}
