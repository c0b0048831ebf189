// `ml evaluate`: scores a trained run on a dataset split and records the report in the run directory.
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {SplitName} from '../config/schema.js'
import {loadSplit, readManifest} from '../data/store.js'
import {initEngine} from '../engine/backend.js'
import {joinPath, readJson, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
import {predictSplitWith, scorePredictions, type EvaluationReport} from './evaluate.js'
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
  const started = performance.now()
  const data = await loadSplit(store, split, manifest)
  const decodeSeconds = (performance.now() - started) / 1000
  if (data.count === 0) {
    throw new UserError(`the ${split} split of ${store} is empty`, {
      code: 'SPLIT_EMPTY',
      exit: 'data',
      suggestions: ['Set data.split.test above 0 (or add a source with split: test) and run `ml ingest` again, or pass --split validation.'],
    })
  }
  const engine = await initEngine(loaded.config.train.backend)
  const {model, choice} = await openModel(joinPath(runDir, RUN_FILES.model), [data.height, data.width, data.channels], {runtime: options.engine ?? 'auto'})
  const inferenceStarted = performance.now()
  let predictions
  try {
    predictions = await predictSplitWith((input, n) => model.run(input, n), data, labels.length, options.batchSize)
  } finally {
    model.dispose()
  }
  const inferenceSeconds = (performance.now() - inferenceStarted) / 1000
  const seconds = (performance.now() - started) / 1000
  const report = scorePredictions(data, predictions, labels)
  const result: EvaluateResult = {
    ...report,
    runId: info.runId,
    runDir,
    backend: engine.backend,
    engine: choice.label,
    engineNotes: choice.notes,
    imagesPerSec: Math.round(data.count / seconds),
    inferenceImagesPerSec: Math.round(data.count / inferenceSeconds),
    seconds: Math.round(seconds * 1000) / 1000,
    decodeSeconds: Math.round(decodeSeconds * 1000) / 1000,
  }
  if (split === 'test') await writeFileAtomic(joinPath(runDir, RUN_FILES.evaluation), JSON.stringify(report, null, 2) + '\n')
  return result
}
