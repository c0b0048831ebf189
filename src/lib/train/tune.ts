// Hyperparameter tuning on Vertex AI: `ml tune` turns tune.parameters into a HyperparameterTuningJob
// whose trials run `ml train` with the trial's values; the trial side (arguments, metric file) is here too.
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import path from 'node:path'
import type {LoadedConfig} from '../config/load.js'
import {setPath, validateConfig} from '../config/load.js'
import type {TuneConfig, TuneParameter} from '../config/cloud-schema.js'
import {jobServiceClient, parentOf as vertexParent, vertexCall, vertexError, type JobServiceClient} from '../cloud/vertex-client.js'
import {UserError} from '../errors.js'
import {textTable} from '../ui/table.js'
import type {EpochMetrics} from '../model/run-dir.js'
import type {RemoteJobUi} from './remote-job.js'
import {checkJobInputs, FINAL_STATES, followJob, jobDisplayName, jobFailure, prepareJob, viewJob, type JobView} from './vertex.js'

/** JSON {parameterId: {key, type}} telling a trial's `ml train` which arguments set which config keys. */
export const TRIAL_PARAMS_ENV = 'ML_TUNE_PARAMS'
/** The metric a trial reports (set on tuning trials; setting it by hand also turns reporting on). */
export const HYPERTUNE_ENV = 'ML_HYPERTUNE'
/** Where cloudml-hypertune writes, and so where Vertex AI reads trial metrics from. */
const DEFAULT_METRIC_FILE = '/tmp/hypertune/output.metrics'
/** cloudml-hypertune keeps this many reports in the file. */
const MAX_REPORTS = 100

/** Vertex passes each value as `--<parameterId>=<value>`: ids are the config keys with dots replaced. */
export const parameterId = (name: string) => name.replace(/\./g, '_')

const SCALE = {linear: 'UNIT_LINEAR_SCALE', log: 'UNIT_LOG_SCALE', reverseLog: 'UNIT_REVERSE_LOG_SCALE'} as const
const ALGORITHM = {grid: 'GRID_SEARCH', random: 'RANDOM_SEARCH'} as const

/** Accuracies are maximized and losses minimized unless tune.goal says otherwise. */
export const goalOf = (tune: TuneConfig) => tune.goal ?? (tune.metric === 'valAccuracy' || tune.metric === 'accuracy' ? 'maximize' : 'minimize')

function parameterSpec(p: TuneParameter): Record<string, unknown> {
  const id = {parameterId: parameterId(p.name)}
  switch (p.type) {
    case 'double':
      return {...id, doubleValueSpec: {minValue: p.min, maxValue: p.max}, ...(p.scale ? {scaleType: SCALE[p.scale]} : {})}
    case 'integer':
      return {...id, integerValueSpec: {minValue: p.min, maxValue: p.max}, ...(p.scale ? {scaleType: SCALE[p.scale]} : {})}
    case 'discrete':
      return {...id, discreteValueSpec: {values: p.values}}
    case 'categorical':
      return {...id, categoricalValueSpec: {values: p.values}}
  }
}

function vertexAlgorithm(algorithm: TuneConfig['algorithm']): keyof typeof ALGORITHM {
  if (algorithm === 'halving') {
    throw new UserError('tune.algorithm halving runs only locally (tune.target local / --target local)', {code: 'CONFIG_INVALID', exit: 'usage', suggestions: ['Use default, grid or random on Vertex AI.']})
  }
  return algorithm === 'default' ? 'random' : algorithm
}

/** The StudySpec of tune (REST JSON shape). */
export function studySpec(tune: TuneConfig): Record<string, unknown> {
  return {
    metrics: [{metricId: tune.metric, goal: goalOf(tune).toUpperCase()}],
    parameters: tune.parameters.map(parameterSpec),
    ...(tune.algorithm === 'default' ? {} : {algorithm: ALGORITHM[vertexAlgorithm(tune.algorithm)]}),
  }
}

type TrialParams = Record<string, {key: string; type: TuneParameter['type']}>

export function trialParams(tune: TuneConfig): TrialParams {
  return Object.fromEntries(tune.parameters.map((p) => [parameterId(p.name), {key: p.name, type: p.type}]))
}

/**
 * Takes a trial's `--<parameterId>=<value>` (or `--<parameterId> <value>`) arguments out of argv and
 * turns them into config overrides, for the parameters ML_TUNE_PARAMS names; other arguments stay.
 */
export function trialOverrides(argv: string[], env: NodeJS.ProcessEnv = process.env): {argv: string[]; overrides: Record<string, unknown>} {
  const text = env[TRIAL_PARAMS_ENV]
  if (!text) return {argv, overrides: {}}
  let params: TrialParams
  try {
    params = JSON.parse(text) as TrialParams
  } catch (error) {
    throw new UserError(`${TRIAL_PARAMS_ENV} is not valid JSON: ${(error as Error).message}`, {code: 'USAGE', exit: 'usage', cause: error})
  }
  const rest: string[] = []
  const overrides: Record<string, unknown> = {}
  for (let i = 0; i < argv.length; i++) {
    const match = /^--([^=]+)(?:=(.*))?$/.exec(argv[i]!)
    const param = match ? params[match[1]!] : undefined
    if (!match || !param) {
      rest.push(argv[i]!)
      continue
    }
    const raw = match[2] ?? argv[++i]
    if (raw === undefined) throw new UserError(`--${match[1]} needs a value`, {code: 'USAGE', exit: 'usage'})
    overrides[param.key] = param.type === 'categorical' ? raw : Number(raw)
  }
  return {argv: rest, overrides}
}

/**
 * Returns a reporter that writes each epoch's metric where Vertex AI reads trial metrics, in the
 * cloudml-hypertune format (JSON lines, newest 100, rewritten whole), when running as a tuning trial
 * (CLOUD_ML_TRIAL_ID) or asked to (ML_HYPERTUNE); undefined otherwise.
 */
export function hypertuneReporter(env: NodeJS.ProcessEnv = process.env, fallbackMetric = 'valAccuracy'): ((metrics: EpochMetrics) => void) | undefined {
  if (!env.CLOUD_ML_TRIAL_ID && !env[HYPERTUNE_ENV]) return undefined
  const tag = env[HYPERTUNE_ENV] || fallbackMetric
  const file = env.CLOUD_ML_HP_METRIC_FILE || DEFAULT_METRIC_FILE
  const reports: string[] = []
  return (metrics) => {
    const value = (metrics as unknown as Record<string, number | undefined>)[tag]
    if (value === undefined || !Number.isFinite(value)) return
    // Keys sorted and values as strings, exactly as cloudml-hypertune writes them.
    const body: Record<string, string | number> = {
      checkpoint_path: '',
      global_step: String(metrics.epoch),
      [tag]: String(value),
      timestamp: Date.now() / 1000,
      trial: String(env.CLOUD_ML_TRIAL_ID ?? 0),
    }
    const line = JSON.stringify(Object.fromEntries(Object.entries(body).sort(([a], [b]) => (a < b ? -1 : 1))))
    reports.push(line)
    if (reports.length > MAX_REPORTS) reports.shift()
    mkdirSync(path.dirname(file), {recursive: true})
    writeFileSync(file, reports.join('\n') + '\n')
  }
}

/** Reads a hypertune metrics file back (for tests and `ml tune` diagnostics). */
export function readHypertuneFile(file: string): Array<Record<string, unknown>> {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line) as Record<string, unknown>)
}

/** One trial as `ml tune` reports it. */
export interface TrialRow {
  id: string
  state: string
  /** Config key -> value. */
  parameters: Record<string, number | string>
  metric?: number
  best?: boolean
}

interface TrialLike {
  id?: string | null
  state?: unknown
  parameters?: Array<{parameterId?: string | null; value?: {numberValue?: number | null; stringValue?: string | null; kind?: string} | number | string | null}> | null
  finalMeasurement?: {metrics?: Array<{metricId?: string | null; value?: number | null}> | null} | null
}

/** The trials of a tuning job as rows, the best one (by the study's goal) marked. */
export function trialRows(trials: TrialLike[], tune: TuneConfig): TrialRow[] {
  const keys = Object.fromEntries(tune.parameters.map((p) => [parameterId(p.name), p.name]))
  const rows = trials.map((trial) => {
    const parameters: Record<string, number | string> = {}
    for (const p of trial.parameters ?? []) {
      const v = p.value
      const value = typeof v === 'object' && v !== null ? (v.kind === 'stringValue' || v.stringValue ? String(v.stringValue) : Number(v.numberValue)) : (v as number | string)
      parameters[keys[p.parameterId ?? ''] ?? p.parameterId ?? '?'] = value
    }
    const metric = trial.finalMeasurement?.metrics?.find((m) => m.metricId === tune.metric)?.value
    const row: TrialRow = {id: String(trial.id ?? ''), state: String(trial.state ?? ''), parameters}
    if (typeof metric === 'number') row.metric = metric
    return row
  })
  return markBest(rows, tune)
}

/** Marks the succeeded trial with the best metric (by the study's goal). */
export function markBest(rows: TrialRow[], tune: TuneConfig): TrialRow[] {
  const scored = rows.filter((r) => r.metric !== undefined && r.state === 'SUCCEEDED')
  if (scored.length > 0) {
    const sign = goalOf(tune) === 'maximize' ? 1 : -1
    scored.reduce((best, r) => (sign * r.metric! > sign * best.metric! ? r : best)).best = true
  }
  return rows
}

/** A fixed-width text table of trials. */
export function trialTable(rows: TrialRow[], tune: TuneConfig): string {
  const headers = ['trial', 'state', ...tune.parameters.map((p) => p.name), tune.metric]
  return textTable(
    headers,
    rows.map((r) => [
      r.best ? `${r.id} *` : r.id,
      r.state,
      ...tune.parameters.map((p) => formatValue(r.parameters[p.name])),
      r.metric === undefined ? '-' : r.metric.toFixed(4),
    ]),
  )
}

function formatValue(v: number | string | undefined): string {
  if (v === undefined) return '-'
  if (typeof v === 'string') return v
  return Number.isInteger(v) ? String(v) : Number(v.toPrecision(4)).toString()
}

/** tune from the config, checked: every parameter must be a key a trial can set (validated with a sample value). */
export function tuneSettings(loaded: LoadedConfig): TuneConfig {
  const tune = loaded.config.tune
  if (!tune) {
    throw new UserError('`ml tune` needs a tune section in the config (metric, maxTrials, parallelTrials, parameters)', {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      suggestions: ['Add tune: {metric: valAccuracy, maxTrials: 8, parallelTrials: 2, parameters: [{name: train.learningRate, type: double, min: 0.0001, max: 0.01, scale: log}]}.'],
    })
  }
  const sample = JSON.parse(JSON.stringify(loaded.config)) as Record<string, unknown>
  for (const p of tune.parameters) setPath(sample, p.name, p.type === 'double' || p.type === 'integer' ? p.min : p.values[0])
  validateConfig(sample, `${loaded.file} with tune.parameters applied`)
  if (tune.metric.startsWith('val') && loaded.config.data.split.validation === 0) {
    throw new UserError(`tune.metric is ${tune.metric} but data.split.validation is 0: trials would have no validation metric to report`, {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      suggestions: ['Set data.split.validation (e.g. 0.1) and ingest again, or tune on accuracy/loss.'],
    })
  }
  return tune
}

/** No question on Ctrl-C: a Vertex AI tuning job is left running (`ml train cancel` ends it). */
export type TuneUi = Pick<RemoteJobUi, 'spinner' | 'note'>

export interface TuneResult {
  job: string
  displayName: string
  state: string
  outputDir: string
  detached?: boolean
  metric: string
  goal: 'maximize' | 'minimize'
  trials: TrialRow[]
  best?: TrialRow
}

interface TuningJobLike {
  trials?: TrialLike[] | null
}

/** Submits the tuning job and (unless detached) follows it to the end; returns the trials. */
export async function runTuning(
  loaded: LoadedConfig,
  options: {detach?: boolean; signal?: AbortSignal; ui: TuneUi; pollMs?: number; client?: JobServiceClient},
): Promise<TuneResult> {
  const tune = tuneSettings(loaded)
  const {vertex} = checkJobInputs(loaded, '`ml tune`')
  const displayName = jobDisplayName(`${loaded.config.name}-tune`)
  // The client before the upload: missing credentials fail before anything is written.
  const jobs = options.client ?? (await jobServiceClient(vertex.region))
  try {
    const prepared = await prepareJob(loaded, {displayName, env: {[TRIAL_PARAMS_ENV]: JSON.stringify(trialParams(tune)), [HYPERTUNE_ENV]: tune.metric}})
    const [created] = await vertexCall('submit the tuning job', () =>
      jobs.createHyperparameterTuningJob({
        parent: vertexParent(vertex),
        hyperparameterTuningJob: {
          displayName,
          studySpec: studySpec(tune),
          maxTrialCount: tune.maxTrials,
          parallelTrialCount: tune.parallelTrials,
          ...(tune.maxFailedTrials === undefined ? {} : {maxFailedTrialCount: tune.maxFailedTrials}),
          trialJobSpec: prepared.jobSpec,
          labels: {'ml-tool': 'ml'},
        },
      }),
    )
    const name = created.name ?? ''
    options.ui.note(`submitted Vertex AI tuning job ${name} (${displayName}): ${tune.maxTrials} trials, ${tune.parallelTrials} at a time; outputs in ${prepared.outputDir}`)
    const base = {job: name, displayName, outputDir: prepared.outputDir, metric: tune.metric, goal: goalOf(tune)}
    if (options.detach) return {...base, state: viewJob(created).state, detached: true, trials: []}
    let last: TuningJobLike = created
    const final: JobView = await followJob(
      async () => {
        const [job] = await jobs.getHyperparameterTuningJob({name})
        last = job
        return job
      },
      {
        ...(options.signal ? {signal: options.signal} : {}),
        ...(options.pollMs ? {pollMs: options.pollMs} : {}),
        onState: (view) => options.ui.spinner.update(`${name}: ${view.state}`),
      },
    ).catch((error: unknown) => {
      throw vertexError(error, `read tuning job ${name}`)
    })
    const trials = trialRows(last.trials ?? [], tune)
    const best = trials.find((t) => t.best)
    if (options.signal?.aborted && !FINAL_STATES.has(final.state)) {
      options.ui.spinner.stop()
      options.ui.note(`stopped following ${name}; it keeps running (cancel with \`ml train cancel ${name}\`)`)
      return {...base, state: final.state, detached: true, trials, ...(best ? {best} : {})}
    }
    if (final.state !== 'JOB_STATE_SUCCEEDED') {
      options.ui.spinner.fail(`${name}: ${final.state}`)
      throw jobFailure(final, {trials})
    }
    options.ui.spinner.succeed(`${name}: succeeded`)
    return {...base, state: final.state, trials, ...(best ? {best} : {})}
  } finally {
    if (!options.client) await jobs.close()
  }
}

