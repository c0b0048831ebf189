// `ml tune --target local`: the same tune.parameters and trials table as the Vertex AI path, with
// trials run as `ml train` processes on this machine (as many at once as tune.parallelTrials and the
// cores allow). Random search, or successive halving: every trial trains a few epochs, the best
// 1/eta continue eta times longer, and so on up to train.epochs. The study is a JSON file in the runs
// folder, rewritten after every trial, so an interrupted study continues where it stopped.
import {spawn} from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {TuneConfig, TuneParameter} from '../config/cloud-schema.js'
import {UserError} from '../errors.js'
import {readRunInfo, RUN_FILES} from '../model/run-dir.js'
import {exists, joinPath, readJson, writeFileAtomic} from '../storage/index.js'
import {rngFor, type Rng} from './rng.js'
import {goalOf, markBest, parameterId, trialParams, TRIAL_PARAMS_ENV, tuneSettings, type TrialRow} from './tune.js'

/** One trial of a local study, as saved in the study file. */
export interface LocalTrial {
  id: string
  /** Config key -> value. */
  parameters: Record<string, number | string>
  /** The run it trains (in train.runs). */
  runId: string
  /** Epochs it has been trained to. */
  epochs: number
  /** SUCCEEDED (trained to the full budget), STOPPED (halved out), FAILED, or PENDING. */
  state: 'PENDING' | 'SUCCEEDED' | 'STOPPED' | 'FAILED'
  metric?: number
  error?: string
}

export interface LocalStudy {
  study: string
  algorithm: 'random' | 'halving'
  metric: string
  goal: 'maximize' | 'minimize'
  /** Epochs of each rung (the last is train.epochs). */
  rungs: number[]
  /** The rung being trained (rungs.length when done). */
  rung: number
  trials: LocalTrial[]
  createdAt: string
  updatedAt: string
}

export interface LocalTuneResult {
  target: 'local'
  study: string
  studyFile: string
  algorithm: 'random' | 'halving'
  state: 'SUCCEEDED' | 'FAILED'
  metric: string
  goal: 'maximize' | 'minimize'
  rungs: number[]
  trials: TrialRow[]
  best?: TrialRow & {runId: string}
  resumed: boolean
}

export interface LocalTuneOptions {
  /** Study name (default `<name>-tune`); running again with it continues the study. */
  study?: string
  signal?: AbortSignal
  onTrial?: (event: {trial: LocalTrial; rung: number; epochs: number; phase: 'start' | 'end'}) => void
  /** Trials at once (default: tune.parallelTrials, at most the cores). */
  parallel?: number
  /** The `ml` entry point the trials run (default: this package's bin/run.cjs). */
  bin?: string
}

const DEFAULT_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'bin', 'run.cjs')

/** A value of a parameter, drawn with `rng` (log scales uniform in the logarithm). */
export function sampleParameter(p: TuneParameter, rng: Rng): number | string {
  switch (p.type) {
    case 'double':
    case 'integer': {
      const u = rng()
      let v: number
      if (p.scale === 'log' && p.min > 0) v = Math.exp(Math.log(p.min) + u * (Math.log(p.max) - Math.log(p.min)))
      else if (p.scale === 'reverseLog' && p.min > 0) v = p.max + p.min - Math.exp(Math.log(p.min) + (1 - u) * (Math.log(p.max) - Math.log(p.min)))
      else v = p.min + u * (p.max - p.min)
      if (p.type === 'integer') return Math.min(p.max, Math.max(p.min, Math.round(v)))
      return Number(v.toPrecision(6))
    }
    case 'discrete':
    case 'categorical':
      return p.values[Math.floor(rng() * p.values.length) % p.values.length]!
  }
}

/** Epochs of each rung of successive halving: the full budget last, each rung eta times shorter. */
export function halvingRungs(trials: number, epochs: number, eta: number): number[] {
  const levels = Math.max(0, Math.floor(Math.log(trials) / Math.log(eta) + 1e-9))
  const rungs: number[] = []
  for (let k = levels; k >= 0; k--) {
    const e = Math.max(1, Math.floor(epochs / eta ** k))
    if (rungs.at(-1) !== e) rungs.push(e)
  }
  if (rungs.at(-1) !== epochs) rungs.push(epochs)
  return rungs
}

function localAlgorithm(tune: TuneConfig): 'random' | 'halving' {
  if (tune.algorithm === 'grid') {
    throw new UserError('tune.algorithm grid runs on Vertex AI only; locally use random or halving', {code: 'CONFIG_INVALID', exit: 'usage', suggestions: ['Set tune.algorithm to random or halving (default: halving).']})
  }
  return tune.algorithm === 'random' ? 'random' : 'halving'
}

function newStudy(loaded: LoadedConfig, tune: TuneConfig, study: string): LocalStudy {
  const algorithm = localAlgorithm(tune)
  const epochs = loaded.config.train.epochs
  const rng = rngFor(loaded.config.train.seed, `tune:${study}`)
  const now = new Date().toISOString()
  const trials: LocalTrial[] = Array.from({length: tune.maxTrials}, (_, i) => {
    const id = String(i + 1).padStart(String(tune.maxTrials).length, '0')
    return {id, parameters: Object.fromEntries(tune.parameters.map((p) => [p.name, sampleParameter(p, rng)])), runId: `${study}-t${id}`, epochs: 0, state: 'PENDING'}
  })
  return {
    study,
    algorithm,
    metric: tune.metric,
    goal: goalOf(tune),
    rungs: algorithm === 'halving' ? halvingRungs(tune.maxTrials, epochs, tune.eta) : [epochs],
    rung: 0,
    trials,
    createdAt: now,
    updatedAt: now,
  }
}

/** Runs one trial to `epochs` as an `ml train` process (continuing its run when it has one). */
async function runTrial(loaded: LoadedConfig, tune: TuneConfig, trial: LocalTrial, epochs: number, options: LocalTuneOptions): Promise<void> {
  const runsDir = resolvePath(loaded, loaded.config.train.runs)
  const started = await exists(joinPath(runsDir, trial.runId, RUN_FILES.info))
  const args = [
    options.bin ?? DEFAULT_BIN,
    'train',
    '--config',
    loaded.file,
    '--epochs',
    String(epochs),
    '--devices',
    '1',
    ...(started ? ['--resume', trial.runId] : ['--run-id', trial.runId]),
    ...Object.entries(trial.parameters).map(([key, value]) => `--${parameterId(key)}=${value}`),
    '--json',
  ]
  const child = spawn(process.execPath, args, {
    env: {...process.env, [TRIAL_PARAMS_ENV]: JSON.stringify(trialParams(tune)), NO_COLOR: '1'},
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)))
  // Ctrl-C: the trial checkpoints and stops; the study is saved and continues next time.
  const stop = () => child.kill('SIGINT')
  options.signal?.addEventListener('abort', stop, {once: true})
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', resolve)
  }).finally(() => options.signal?.removeEventListener('abort', stop))
  if (code === 0) {
    const info = await readRunInfo(joinPath(runsDir, trial.runId))
    const value = (info.final as Record<string, number | undefined> | undefined)?.[tune.metric]
    trial.epochs = info.epochsCompleted
    if (value === undefined) {
      trial.state = 'FAILED'
      trial.error = `run ${trial.runId} reported no ${tune.metric}`
    } else trial.metric = value
    return
  }
  if (options.signal?.aborted) return
  let message = stderr.trim().split('\n').at(-1) ?? `exit ${code}`
  try {
    message = (JSON.parse(stdout) as {error?: {message?: string}}).error?.message ?? message
  } catch {
    // Not JSON: keep the last line of stderr.
  }
  trial.state = 'FAILED'
  trial.error = message
}

/** Runs `work` over `items` with at most `limit` at once. */
async function pool<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({length: Math.min(limit, items.length)}, async () => {
      while (next < items.length) await work(items[next++]!)
    }),
  )
}

function rowsOf(study: LocalStudy, tune: TuneConfig): TrialRow[] {
  return markBest(
    study.trials.map((t) => ({id: t.id, state: t.state, parameters: t.parameters, ...(t.metric === undefined ? {} : {metric: t.metric})})),
    tune,
  )
}

/** Runs (or continues) a local study and returns its trials, the best one marked. */
export async function runLocalTuning(loaded: LoadedConfig, options: LocalTuneOptions = {}): Promise<LocalTuneResult> {
  const tune = tuneSettings(loaded)
  const study = options.study ?? `${loaded.config.name}-tune`
  if (!/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/.test(study)) throw new UserError(`invalid study name "${study}"`, {code: 'USAGE', exit: 'usage', suggestions: ['Letters, digits, ".", "_" and "-".']})
  const runsDir = resolvePath(loaded, loaded.config.train.runs)
  const studyFile = joinPath(runsDir, '.tune', `${study}.json`)
  const resumed = await exists(studyFile)
  const state = resumed ? await readJson<LocalStudy>(studyFile) : newStudy(loaded, tune, study)
  if (resumed && (state.trials.length !== tune.maxTrials || tune.parameters.some((p) => !(p.name in (state.trials[0]?.parameters ?? {}))))) {
    throw new UserError(`study ${study} (${studyFile}) was started with other tune settings`, {
      code: 'TUNE_STUDY_CHANGED',
      exit: 'usage',
      suggestions: ['Continue it with the settings it started with, or start another with --study <name>.'],
    })
  }
  const save = async () => {
    state.updatedAt = new Date().toISOString()
    await writeFileAtomic(studyFile, JSON.stringify(state, null, 2) + '\n')
  }
  await save()
  const parallel = Math.max(1, Math.min(options.parallel ?? tune.parallelTrials, os.availableParallelism()))
  const sign = state.goal === 'maximize' ? 1 : -1
  while (state.rung < state.rungs.length && !options.signal?.aborted) {
    const epochs = state.rungs[state.rung]!
    const last = state.rung === state.rungs.length - 1
    const todo = state.trials.filter((t) => t.state === 'PENDING' && t.epochs < epochs)
    await pool(todo, parallel, async (trial) => {
      if (options.signal?.aborted) return
      options.onTrial?.({trial, rung: state.rung, epochs, phase: 'start'})
      await runTrial(loaded, tune, trial, epochs, options)
      if (trial.state === 'PENDING' && last && trial.epochs >= epochs) trial.state = 'SUCCEEDED'
      await save()
      options.onTrial?.({trial, rung: state.rung, epochs, phase: 'end'})
    })
    if (options.signal?.aborted) break
    const alive = state.trials.filter((t) => t.state === 'PENDING')
    if (!last) {
      // Keep the best 1/eta (at least one); the rest stop here with the metric they reached.
      const keep = Math.max(1, Math.floor(alive.length / tune.eta))
      const ranked = [...alive].sort((a, b) => sign * ((b.metric ?? -Infinity * sign) - (a.metric ?? -Infinity * sign)))
      for (const t of ranked.slice(keep)) t.state = 'STOPPED'
    }
    state.rung++
    await save()
  }
  if (options.signal?.aborted) {
    throw new UserError(`tuning interrupted; study ${study} saved in ${studyFile}`, {code: 'INTERRUPTED', exit: 'interrupted', suggestions: [`Continue with \`ml tune --target local --study ${study}\`.`]})
  }
  const rows = rowsOf(state, tune)
  const bestRow = rows.find((r) => r.best)
  const best = bestRow ? {...bestRow, runId: state.trials.find((t) => t.id === bestRow.id)!.runId} : undefined
  return {
    target: 'local',
    study,
    studyFile,
    algorithm: state.algorithm,
    state: best ? 'SUCCEEDED' : 'FAILED',
    metric: tune.metric,
    goal: state.goal,
    rungs: state.rungs,
    trials: rows,
    ...(best ? {best} : {}),
    resumed,
  }
}
