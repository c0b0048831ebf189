// `ml export`: copies a trained run into the model repository (<dir>/<name>/<version>/) as a
// TensorFlow.js layers model with its labels, preprocessing spec and a model card.
import {createHash} from 'node:crypto'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import {exists, joinPath, listNames, readBytes, readJson, remove, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../ui/errors.js'
import {readRunInfo, resolveRunDir, RUN_FILES, readEpochMetrics} from '../train/run-dir.js'

export const MODEL_FILES = {
  modelJson: 'model.json',
  weights: 'weights.bin',
  labels: 'labels.json',
  preprocessing: 'preprocessing.json',
  card: 'model-card.json',
  cardMarkdown: 'MODEL_CARD.md',
} as const

export interface ExportOptions {
  loaded: LoadedConfig
  /** Run id or directory; default: the latest run. */
  run?: string
  /** Repository directory (default export.dir). */
  dir?: string
  /** Version number (default: one above the highest existing). */
  version?: number
}

export interface ExportResult {
  name: string
  version: number
  dir: string
  runId: string
  formats: Array<{format: string; bytes: number; files: string[]}>
  /** True when the latest existing version already held identical files (nothing was written). */
  unchanged: boolean
}

/** Numeric version folders of a model in the repository, ascending. */
export async function listVersions(repoDir: string, name: string): Promise<number[]> {
  return (await listNames(joinPath(repoDir, name)))
    .filter((n) => /^[1-9][0-9]*$/.test(n))
    .map(Number)
    .sort((a, b) => a - b)
}

function digest(files: Record<string, Uint8Array | string>): string {
  const hash = createHash('sha256')
  for (const name of Object.keys(files).sort()) hash.update(name).update('\0').update(files[name]!).update('\0')
  return hash.digest('hex')
}

export async function exportTfjs(options: ExportOptions): Promise<ExportResult> {
  const {loaded} = options
  const {config} = loaded
  const runsDir = resolvePath(loaded, config.train.runs)
  const runDir = await resolveRunDir(runsDir, options.run)
  const info = await readRunInfo(runDir)
  if (info.status !== 'completed' || !(await exists(joinPath(runDir, RUN_FILES.model, MODEL_FILES.modelJson)))) {
    throw new UserError(`run ${info.runId} has not finished training (status ${info.status})`, {
      code: 'RUN_INCOMPLETE',
      exit: 'data',
      suggestions: [`Finish it with \`ml train --resume ${info.runId}\`, or export another run with --run.`],
    })
  }
  const repoDir = options.dir ?? resolvePath(loaded, config.export.dir)
  const name = config.name
  const modelDir = joinPath(runDir, RUN_FILES.model)
  const metrics = await readEpochMetrics(runDir)
  const evaluation = (await exists(joinPath(runDir, RUN_FILES.evaluation))) ? await readJson<Record<string, unknown>>(joinPath(runDir, RUN_FILES.evaluation)) : undefined
  const labels = await readJson<string[]>(joinPath(runDir, RUN_FILES.labels))
  const preprocessing = await readJson<Record<string, unknown>>(joinPath(runDir, RUN_FILES.preprocessing))
  const {createRequire} = await import('node:module')
  const toolkitVersion = (createRequire(import.meta.url)('../../../../package.json') as {version: string}).version
  const card = {
    name,
    runId: info.runId,
    task: 'image-classification',
    toolkit: {name: 'ml', version: toolkitVersion},
    input: {name: 'image', ...preprocessing},
    output: {name: 'probabilities', labels},
    dataset: info.dataset,
    training: {backend: info.backend, workers: info.workers, seed: info.seed, epochs: info.epochsCompleted, params: info.params, config: await readJson(joinPath(runDir, RUN_FILES.config))},
    metrics: {
      train: info.final ? {loss: info.final.loss, accuracy: info.final.accuracy} : undefined,
      validation: info.final?.valLoss === undefined ? undefined : {loss: info.final.valLoss, accuracy: info.final.valAccuracy},
      test: evaluation ? {loss: evaluation.loss, accuracy: evaluation.accuracy} : undefined,
      history: metrics.map(({epoch, loss, accuracy, valLoss, valAccuracy}) => ({epoch, loss, accuracy, valLoss, valAccuracy})),
    },
    trainedAt: info.updatedAt,
  }
  const files: Record<string, Uint8Array | string> = {
    [MODEL_FILES.modelJson]: await readBytes(joinPath(modelDir, MODEL_FILES.modelJson)),
    [MODEL_FILES.weights]: await readBytes(joinPath(modelDir, MODEL_FILES.weights)),
    [MODEL_FILES.labels]: JSON.stringify(labels) + '\n',
    [MODEL_FILES.preprocessing]: JSON.stringify(preprocessing, null, 2) + '\n',
    [MODEL_FILES.card]: JSON.stringify(card, null, 2) + '\n',
    [MODEL_FILES.cardMarkdown]: cardMarkdown(card),
  }
  const versions = await listVersions(repoDir, name)
  const latest = versions.at(-1)
  // Re-exporting the same run gives the same bytes; do not pile up identical versions.
  if (options.version === undefined && latest !== undefined) {
    const existing: Record<string, Uint8Array | string> = {}
    for (const file of Object.keys(files)) {
      const p = joinPath(repoDir, name, String(latest), file)
      if (await exists(p)) existing[file] = await readBytes(p)
    }
    const same = Object.keys(existing).length === Object.keys(files).length && digest(existing) === digest(files)
    if (same) return result(name, latest, joinPath(repoDir, name, String(latest)), info.runId, files, true)
  }
  const version = options.version ?? (latest ?? 0) + 1
  const dir = joinPath(repoDir, name, String(version))
  const staging = joinPath(repoDir, name, `.staging-${version}-${process.pid}`)
  await remove(staging)
  for (const [file, data] of Object.entries(files)) await writeFileAtomic(joinPath(staging, file), data)
  await remove(dir)
  const {rename} = await import('node:fs/promises')
  await rename(staging, dir)
  return result(name, version, dir, info.runId, files, false)
}

function result(name: string, version: number, dir: string, runId: string, files: Record<string, Uint8Array | string>, unchanged: boolean): ExportResult {
  const bytes = Object.values(files).reduce((n, f) => n + (typeof f === 'string' ? Buffer.byteLength(f) : f.byteLength), 0)
  return {name, version, dir, runId, formats: [{format: 'tfjs', bytes, files: Object.keys(files)}], unchanged}
}

function cardMarkdown(card: {name: string; runId: string; input: Record<string, unknown>; output: {labels: string[]}; dataset: {version: number; fingerprint: string; counts: Record<string, Record<string, number>>}; training: {backend: string; epochs: number; params: number; seed: number}; metrics: Record<string, unknown>; trainedAt: string; toolkit: {version: string}}): string {
  const m = card.metrics as {train?: {accuracy: number}; validation?: {accuracy: number}; test?: {accuracy: number}}
  const row = (split: string, v?: {accuracy: number}) => `| ${split} | ${v ? v.accuracy.toFixed(4) : '-'} |`
  return `# Model card: ${card.name}

- Run: \`${card.runId}\`, trained ${card.trainedAt} with ml ${card.toolkit.version} on the ${card.training.backend} backend
- Architecture: ${card.training.params.toLocaleString('en-US')} parameters, ${card.training.epochs} epochs, seed ${card.training.seed}
- Input: \`image\`, ${card.input.height}x${card.input.width}x${card.input.channels}, resized with fit=${card.input.fit}, pixels scaled by 1/255
- Output: \`probabilities\` over ${card.output.labels.length} classes: ${card.output.labels.join(', ')}
- Dataset: version ${card.dataset.version}, fingerprint \`${card.dataset.fingerprint.slice(0, 16)}\`

| split | accuracy |
|---|---|
${row('train', m.train)}
${row('validation', m.validation)}
${row('test', m.test)}
`
}
