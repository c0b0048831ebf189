// The model repository: `<dir>/<name>/<version>/` folders written by `ml export`, their file names,
// version listing, and which model a command should use when the user names none.
import path from 'node:path'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import {exists, joinPath, listNames} from '../storage/index.js'
import {UserError} from '../errors.js'
import {resolveRunDir, RUN_FILES} from './run-dir.js'

/** The files of a model version folder (and of a run's model folder, which holds the first two). */
export const MODEL_FILES = {
  modelJson: 'model.json',
  weights: 'weights.bin',
  onnx: 'model.onnx',
  labels: 'labels.json',
  preprocessing: 'preprocessing.json',
  card: 'model-card.json',
  cardMarkdown: 'MODEL_CARD.md',
} as const

/** Numeric version folders of a model in the repository, ascending. */
export async function listVersions(repoDir: string, name: string): Promise<number[]> {
  return (await listNames(joinPath(repoDir, name)))
    .filter((n) => /^[1-9][0-9]*$/.test(n))
    .map(Number)
    .sort((a, b) => a - b)
}

/** Which model a command uses, and how it was found: the model is named in every command's output. */
export interface ResolvedModel {
  dir: string
  /** model: --model; run: --run; export: the latest exported version; latest-run: no export yet, the latest run. */
  source: 'model' | 'run' | 'export' | 'latest-run'
  /** A short human name: "digits version 3", "run digits-20261124-101500". */
  description: string
}

/**
 * Finds the model a command should use: --model (an export version folder or a model folder in the
 * repository, meaning its latest version), --run (a run's model), else the latest exported version
 * of the config's model, else the latest run.
 */
export async function resolveModel(loaded: LoadedConfig, options: {model?: string; run?: string}): Promise<ResolvedModel> {
  if (options.model) {
    const named = options.model.split(/[\\/]/).filter(Boolean)
    if ((await exists(joinPath(options.model, MODEL_FILES.modelJson))) || (await exists(joinPath(options.model, MODEL_FILES.onnx)))) {
      return {dir: options.model, source: 'model', description: named.length >= 2 && /^[1-9][0-9]*$/.test(named.at(-1)!) ? `${named.at(-2)} version ${named.at(-1)}` : options.model}
    }
    const versions = await listVersions(joinPath(options.model, '..'), named.at(-1)!)
    if (versions.length) return {dir: joinPath(options.model, String(versions.at(-1))), source: 'model', description: `${named.at(-1)} version ${versions.at(-1)}`}
    throw new UserError(`no model in ${options.model}`, {code: 'MODEL_NOT_FOUND', exit: 'data', suggestions: ['Point --model at a folder written by `ml export`.']})
  }
  const runsDir = resolvePath(loaded, loaded.config.train.runs)
  if (options.run) {
    const runDir = await resolveRunDir(runsDir, options.run)
    return {dir: joinPath(runDir, RUN_FILES.model), source: 'run', description: `run ${path.basename(runDir)}`}
  }
  const repo = resolvePath(loaded, loaded.config.export.dir)
  const versions = await listVersions(repo, loaded.config.name)
  if (versions.length) return {dir: joinPath(repo, loaded.config.name, String(versions.at(-1))), source: 'export', description: `${loaded.config.name} version ${versions.at(-1)}`}
  const runDir = await resolveRunDir(runsDir)
  return {dir: joinPath(runDir, RUN_FILES.model), source: 'latest-run', description: `run ${path.basename(runDir)} (latest run, not exported: \`ml export\` to use an export)`}
}

/** resolveModel's folder. */
export async function resolveModelDir(loaded: LoadedConfig, options: {model?: string; run?: string}): Promise<string> {
  return (await resolveModel(loaded, options)).dir
}
