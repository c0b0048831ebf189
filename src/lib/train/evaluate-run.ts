// `ml evaluate`: scores a trained run on a dataset split and records the report in the run directory.
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {SplitName} from '../config/schema.js'
import {loadSplit, readManifest} from '../data/store.js'
import {initEngine} from '../engine/backend.js'
import {joinPath, readJson, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
import {predictSplit, scorePredictions, type EvaluationReport} from './evaluate.js'
import {loadModel} from '../model/artifact.js'
import {readRunInfo, resolveRunDir, RUN_FILES} from '../model/run-dir.js'

export interface EvaluateOptions {
  loaded: LoadedConfig
  run?: string
  split?: SplitName
  batchSize?: number
}

export interface EvaluateResult extends EvaluationReport {
  runId: string
  runDir: string
  backend: string
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
  const data = await loadSplit(store, split, manifest)
  if (data.count === 0) {
    throw new UserError(`the ${split} split of ${store} is empty`, {
      code: 'SPLIT_EMPTY',
      exit: 'data',
      suggestions: ['Set data.split.test above 0 (or add a source with split: test) and run `ml ingest` again, or pass --split validation.'],
    })
  }
  const engine = await initEngine(loaded.config.train.backend)
  const model = await loadModel(joinPath(runDir, RUN_FILES.model))
  const predictions = await predictSplit(model, data, labels.length, options.batchSize)
  model.dispose()
  const report = scorePredictions(data, predictions, labels)
  const result: EvaluateResult = {...report, runId: info.runId, runDir, backend: engine.backend}
  if (split === 'test') await writeFileAtomic(joinPath(runDir, RUN_FILES.evaluation), JSON.stringify(report, null, 2) + '\n')
  return result
}
