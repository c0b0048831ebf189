// The run directory: the contract between training and evaluate/export/serve. It holds the model,
// labels, preprocessing spec, metrics log, checkpoints and the config that produced them.
import path from 'node:path'
import type {MlConfig} from '../config/schema.js'
import {exists, joinPath, listNames, makeDir, readJson, readText, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'

export type RunStatus = 'running' | 'completed' | 'failed' | 'interrupted'

export interface EpochMetrics {
  epoch: number
  loss: number
  accuracy: number
  valLoss?: number
  valAccuracy?: number
  imagesPerSec: number
  seconds: number
  at: string
}

export interface RunInfo {
  runId: string
  name: string
  createdAt: string
  updatedAt: string
  status: RunStatus
  error?: string
  backend: string
  workers: number
  seed: number
  epochs: number
  epochsCompleted: number
  params: number
  dataset: {store: string; version: number; fingerprint: string; classes: string[]; counts: Record<string, Record<string, number>>}
  final?: Omit<EpochMetrics, 'at' | 'seconds'>
  /**
   * The epoch whose weights the run's model holds: the last one, or with
   * train.earlyStopping.restoreBest the best by its monitor (then `restored` is true).
   */
  kept?: {epoch: number; restored: boolean; monitor?: string}
}

export const RUN_FILES = {
  info: 'run.json',
  config: 'config.json',
  labels: 'labels.json',
  preprocessing: 'preprocessing.json',
  metrics: 'metrics.jsonl',
  checkpoints: 'checkpoints',
  model: 'model',
  evaluation: 'evaluation.json',
  /** The best epoch's model so far, kept while training with train.earlyStopping.restoreBest. */
  bestModel: 'best-model',
} as const

const LATEST = 'LATEST'

export function newRunId(name: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-')
  return `${name}-${stamp}`
}

export async function createRunDir(runsDir: string, runId: string): Promise<string> {
  const dir = joinPath(runsDir, runId)
  if (await exists(joinPath(dir, RUN_FILES.info))) {
    throw new UserError(`run ${runId} already exists in ${runsDir}`, {
      code: 'RUN_EXISTS',
      exit: 'usage',
      suggestions: ['Pass --resume to continue it, or another --run-id.'],
    })
  }
  await makeDir(dir)
  return dir
}

export async function markLatest(runsDir: string, runId: string): Promise<void> {
  await writeFileAtomic(joinPath(runsDir, LATEST), runId + '\n')
}

/**
 * Finds a run directory: an explicit directory path, a run id under `runsDir`, or (no ref) the
 * latest run. Throws a UserError saying what to do when there is none.
 */
export async function resolveRunDir(runsDir: string, ref?: string): Promise<string> {
  if (ref && (await exists(joinPath(ref, RUN_FILES.info)))) return ref
  if (ref) {
    const dir = joinPath(runsDir, ref)
    if (await exists(joinPath(dir, RUN_FILES.info))) return dir
    throw new UserError(`no run "${ref}" (looked for ${ref} and ${dir})`, {
      code: 'RUN_NOT_FOUND',
      exit: 'data',
      suggestions: [`List runs with \`ls ${runsDir}\`.`],
    })
  }
  let latest: string | undefined
  if (await exists(joinPath(runsDir, LATEST))) latest = (await readText(joinPath(runsDir, LATEST))).trim()
  if (!latest) {
    const names = (await listNames(runsDir)).filter((n) => n !== LATEST)
    latest = names.at(-1)
  }
  if (!latest || !(await exists(joinPath(runsDir, latest, RUN_FILES.info)))) {
    throw new UserError(`no training run found in ${runsDir}`, {
      code: 'RUN_NOT_FOUND',
      exit: 'data',
      suggestions: ['Train a model first: `ml train`.'],
    })
  }
  return joinPath(runsDir, latest)
}

/** Ids of the runs under `runsDir` (folders holding a run.json), in name order. */
export async function listRunIds(runsDir: string): Promise<string[]> {
  const ids: string[] = []
  for (const name of await listNames(runsDir)) {
    if (name === LATEST || name.startsWith('.')) continue
    if (await exists(joinPath(runsDir, name, RUN_FILES.info))) ids.push(name)
  }
  return ids
}

/** The run LATEST names, if any. */
export async function latestRunId(runsDir: string): Promise<string | undefined> {
  if (!(await exists(joinPath(runsDir, LATEST)))) return undefined
  return (await readText(joinPath(runsDir, LATEST))).trim() || undefined
}

export async function readRunInfo(runDir: string): Promise<RunInfo> {
  return readJson<RunInfo>(joinPath(runDir, RUN_FILES.info))
}

export async function writeRunInfo(runDir: string, info: RunInfo): Promise<void> {
  await writeFileAtomic(joinPath(runDir, RUN_FILES.info), JSON.stringify(info, null, 2) + '\n')
}

export async function readRunConfig(runDir: string): Promise<MlConfig> {
  return readJson<MlConfig>(joinPath(runDir, RUN_FILES.config))
}

export async function readEpochMetrics(runDir: string): Promise<EpochMetrics[]> {
  if (!(await exists(joinPath(runDir, RUN_FILES.metrics)))) return []
  const text = await readText(joinPath(runDir, RUN_FILES.metrics))
  return text
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line) as EpochMetrics)
}

/** The metrics log is rewritten whole (atomically) so that a resumed run never holds stale epochs. */
export async function writeEpochMetrics(runDir: string, metrics: EpochMetrics[]): Promise<void> {
  await writeFileAtomic(joinPath(runDir, RUN_FILES.metrics), metrics.map((m) => JSON.stringify(m)).join('\n') + (metrics.length ? '\n' : ''))
}

export function runNameOf(runDir: string): string {
  return path.basename(runDir)
}
