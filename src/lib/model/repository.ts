// The model repository: `<dir>/<name>/<version>/` folders written by `ml export`, their file names,
// version listing, and which model a command should use when the user names none.
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

/**
 * Finds the model a command should use: --model (an export version folder or a model folder in the
 * repository, meaning its latest version), --run (a run's model), else the latest exported version
 * of the config's model, else the latest run.
 */
export async function resolveModelDir(loaded: LoadedConfig, options: {model?: string; run?: string}): Promise<string> {
  if (options.model) {
    if (await exists(joinPath(options.model, MODEL_FILES.modelJson))) return options.model
    const versions = await listVersions(joinPath(options.model, '..'), options.model.split(/[\\/]/).filter(Boolean).at(-1)!)
    if (versions.length) return joinPath(options.model, String(versions.at(-1)))
    throw new UserError(`no model in ${options.model}`, {code: 'MODEL_NOT_FOUND', exit: 'data', suggestions: ['Point --model at a folder written by `ml export`.']})
  }
  const runsDir = resolvePath(loaded, loaded.config.train.runs)
  if (options.run) return joinPath(await resolveRunDir(runsDir, options.run), RUN_FILES.model)
  const repo = resolvePath(loaded, loaded.config.export.dir)
  const versions = await listVersions(repo, loaded.config.name)
  if (versions.length) return joinPath(repo, loaded.config.name, String(versions.at(-1)))
  const runDir = await resolveRunDir(runsDir)
  return joinPath(runDir, RUN_FILES.model)
}
