// `ml evaluate`: scores a model (a run's, an exported version, name@alias, an ONNX file's folder) on
// labelled images (a dataset store's split, local or gs:// / s3://, or a folder of class
// sub-folders), matching the data's classes to the model's labels by name. Batches are decoded on
// this thread a couple ahead while the engine runs the current one in its worker thread. The test
// report of a run on its own dataset is saved in the run directory.
import os from 'node:os'
import path from 'node:path'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {SplitName} from '../config/schema.js'
import {initEngine} from '../engine/backend.js'
import type {RuntimePreference} from '../engine/inference.js'
import {UserError} from '../errors.js'
import {resolveModel, type ResolvedModel} from '../model/repository.js'
import {readRunInfo, resolveRunDir, RUN_FILES} from '../model/run-dir.js'
import {openLabelledSource, type LabelledBatch, type LabelledSource} from '../predict/labelled.js'
import {Predictor} from '../serve/predictor.js'
import {exists, joinPath, writeFileAtomic} from '../storage/index.js'
import {scoreLabels, type EvaluationReport} from './evaluate.js'

export interface EvaluateOptions {
  loaded: LoadedConfig
  /** Run id or folder: its model (default: the latest run, when no --model). */
  run?: string
  /** An export version folder, a model folder (its latest version), name@alias, name@version, or a model.onnx file. */
  model?: string
  /** Labelled images: a dataset store (path, gs://, s3://) or a folder of class sub-folders. Default: the run's dataset, else data.store. */
  data?: string
  /** A store's split (default test). */
  split?: SplitName
  batchSize?: number
  /** Inference engine: auto (ONNX Runtime when the model converts and it is installed), onnx or tfjs. */
  engine?: RuntimePreference
  /** ONNX Runtime's threads (default: every core but the one decoding). */
  threads?: number
  /** Called after each batch with images scored so far and the total. */
  onProgress?: (done: number, total: number) => void
}

export interface Evaluation extends EvaluationReport {
  /** The run, when a run's model was scored. */
  runId?: string
  runDir?: string
  model: {dir: string; source: ResolvedModel['source']; name: string}
  data: {kind: 'store' | 'folder'; location: string; split?: SplitName; version?: number}
  /** Images of a folder that could not be decoded, left out of the scores. */
  skipped: Array<{file: string; error: string}>
  /** TensorFlow.js's backend (training's, and the engine when TensorFlow.js runs the model). */
  backend: string
  /** What ran the model: "onnxruntime (cpu)", "tfjs (wasm)", ... */
  engine: string
  engineNotes: string[]
  /** Images scored per second of the whole evaluation (reading and decoding included), and of inference alone. */
  imagesPerSec: number
  inferenceImagesPerSec: number
  seconds: number
  /** Seconds the engine waited for decoded images (decoding not hidden behind inference). */
  decodeWaitSeconds: number
}

/** A run's evaluation (what `ml evaluate` without --model gives, and the HTML report needs). */
export interface EvaluateResult extends Evaluation {
  runId: string
  runDir: string
}

/** The model file or folder --model names: a model.onnx file stands for its folder. */
async function modelArgument(model: string): Promise<string> {
  if (!model.toLowerCase().endsWith('.onnx') || !(await exists(model))) return model
  if (path.basename(model) !== 'model.onnx') {
    throw new UserError(`${model}: an ONNX model is read as model.onnx, with labels.json and preprocessing.json beside it`, {
      code: 'MODEL_NOT_FOUND',
      exit: 'usage',
      suggestions: ['Point --model at a version folder written by `ml export` (it holds model.onnx, labels.json and preprocessing.json).'],
    })
  }
  return path.dirname(model)
}

/** Pulls up to `depth` items ahead of the consumer: the generator decodes while the consumer awaits inference. */
async function* ahead<T>(source: AsyncGenerator<T>, depth: number): AsyncGenerator<T> {
  const pending: Array<Promise<IteratorResult<T>>> = []
  try {
    for (;;) {
      while (pending.length < depth) {
        const next = source.next()
        next.catch(() => {})
        pending.push(next)
      }
      const item = await pending.shift()!
      if (item.done) return
      yield item.value
    }
  } finally {
    await Promise.allSettled(pending)
    await source.return(undefined)
  }
}

export async function evaluate(options: EvaluateOptions): Promise<Evaluation> {
  const {loaded} = options
  let runDir: string | undefined
  let resolved: ResolvedModel
  if (options.model !== undefined) {
    resolved = await resolveModel(loaded, {model: await modelArgument(options.model)})
  } else {
    runDir = await resolveRunDir(resolvePath(loaded, loaded.config.train.runs), options.run)
    resolved = {dir: joinPath(runDir, RUN_FILES.model), source: options.run ? 'run' : 'latest-run', description: `run ${path.basename(runDir)}`}
  }
  const info = runDir === undefined ? undefined : await readRunInfo(runDir)
  const location = options.data ?? info?.dataset.store ?? resolvePath(loaded, loaded.config.data.store)
  const engine = await initEngine(loaded.config.train.backend)
  // Records are decoded on this thread while the engine runs: ONNX Runtime gets the other cores, as
  // its threads meet at a barrier after every operator and one of them preempted by the decoder
  // stalls them all (measured by bench:predict: slower than decoding and scoring one after the other).
  const threads = options.threads ?? Math.max(1, os.availableParallelism() - 1)
  const predictor = await Predictor.load(resolved.dir, {runtime: options.engine ?? 'auto', worker: {engine: loaded.config.train.backend, threads}})
  try {
    const source = await openLabelledSource(location, {split: options.split, preprocessing: predictor.preprocessing, limits: {maxPixels: loaded.config.data.maxPixels, maxFileBytes: loaded.config.data.maxFileBytes}})
    const scored = await scoreSource(predictor, source, options)
    const evaluation: Evaluation = {
      ...scored.report,
      ...(runDir === undefined ? {} : {runId: info!.runId, runDir}),
      model: {dir: resolved.dir, source: resolved.source, name: resolved.description},
      data: {kind: source.kind, location: source.location, ...(source.split ? {split: source.split} : {}), ...(source.version === undefined ? {} : {version: source.version})},
      skipped: source.skipped,
      backend: engine.backend,
      engine: predictor.engine.label,
      engineNotes: predictor.engine.notes,
      imagesPerSec: Math.round(scored.report.count / scored.seconds),
      inferenceImagesPerSec: Math.round(scored.report.count / Math.max(scored.inferenceSeconds, 1e-9)),
      seconds: Math.round(scored.seconds * 1000) / 1000,
      decodeWaitSeconds: Math.round(scored.waitSeconds * 1000) / 1000,
    }
    // A run's own test report goes into its folder (and from there into the model card on export).
    if (runDir !== undefined && options.data === undefined && source.split === 'test') {
      await writeFileAtomic(joinPath(runDir, RUN_FILES.evaluation), JSON.stringify(scored.report, null, 2) + '\n')
    }
    return evaluation
  } finally {
    predictor.dispose()
  }
}

/** A run's model on its dataset (or options.data): `ml evaluate` without --model. */
export async function evaluateRun(options: Omit<EvaluateOptions, 'model'>): Promise<EvaluateResult> {
  return (await evaluate({...options, model: undefined})) as EvaluateResult
}

/**
 * Runs the model over every batch of `source` and scores it against the model's labels: the data's
 * classes are matched by name, so a store whose class order differs from the model's scores right.
 */
export async function scoreSource(
  predictor: Pick<Predictor, 'labels' | 'predictBatch'>,
  source: LabelledSource,
  options: {batchSize?: number; onProgress?: (done: number, total: number) => void} = {},
): Promise<{report: EvaluationReport; seconds: number; inferenceSeconds: number; waitSeconds: number}> {
  const labels = predictor.labels
  const toModel = source.classes.map((c) => labels.indexOf(c))
  const unknown = source.classes.filter((c, i) => toModel[i] === -1 && (source.counts[c] ?? 0) > 0)
  if (unknown.length > 0) {
    throw new UserError(`the model does not know class${unknown.length > 1 ? 'es' : ''} ${unknown.map((c) => `"${c}"`).join(', ')} of ${source.location} (its classes: ${labels.join(', ')})`, {
      code: 'CLASSES_UNKNOWN',
      exit: 'data',
      details: {unknown, modelClasses: labels},
      suggestions: ['Score data of the classes the model was trained on, or train a new model on the current dataset.'],
    })
  }
  const k = labels.length
  const truth: number[] = []
  const predicted: number[] = []
  let lossSum = 0
  const EPSILON = 1e-7
  const started = performance.now()
  let inferenceMs = 0
  let waitMs = 0
  let waitFrom = performance.now()
  for await (const batch of ahead<LabelledBatch>(source.batches(options.batchSize ?? 256), 2)) {
    waitMs += performance.now() - waitFrom
    const t0 = performance.now()
    const values = await predictor.predictBatch(batch.input, batch.n)
    inferenceMs += performance.now() - t0
    for (let i = 0; i < batch.n; i++) {
      const label = toModel[batch.labels[i]!]!
      if (label < 0) throw new UserError(`${batch.keys[i]} is of class "${source.classes[batch.labels[i]!]}", unknown to the model`, {code: 'CLASSES_UNKNOWN', exit: 'data'})
      let best = 0
      for (let c = 1; c < k; c++) if (values[i * k + c]! > values[i * k + best]!) best = c
      truth.push(label)
      predicted.push(best)
      lossSum += -Math.log(Math.min(1 - EPSILON, Math.max(EPSILON, values[i * k + label]!)))
    }
    options.onProgress?.(truth.length, source.count)
    waitFrom = performance.now()
  }
  const seconds = (performance.now() - started) / 1000
  if (truth.length === 0) {
    throw new UserError(`no image of ${source.location} could be decoded`, {code: 'EVALUATE_NO_IMAGES', exit: 'data', details: {skipped: source.skipped.slice(0, 20)}})
  }
  const report = scoreLabels(source.split ?? 'folder', Int32Array.from(truth), Int32Array.from(predicted), lossSum / truth.length, labels)
  return {report, seconds, inferenceSeconds: inferenceMs / 1000, waitSeconds: waitMs / 1000}
}
