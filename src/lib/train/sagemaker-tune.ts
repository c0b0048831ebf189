// Hyperparameter tuning on SageMaker: `ml tune` with tune.target sagemaker (or train.target sagemaker)
// turns tune.parameters into a HyperParameterTuningJob whose trials are SageMaker training jobs of the
// ml image, exactly like `ml train --target sagemaker`; the trial side is here too:
//   - SageMaker hands a trial its values in hyperparameters.json under the parameter ids
//     (train_learningRate), beside the static ml-config: trialOverrides() maps them back to config keys.
//   - SageMaker reads trial metrics from the container's log with the regular expressions of
//     MetricDefinitions: every epoch prints one `ml-metric <name>=<value>` line (metricLine()).
import {randomBytes} from 'node:crypto'
import type {SageMakerClient} from '@aws-sdk/client-sagemaker'
import type {LoadedConfig} from '../config/load.js'
import type {TuneConfig, TuneParameter} from '../config/cloud-schema.js'
import {UserError} from '../errors.js'
import {
  followSageMaker,
  interruptedSageMakerJob,
  prepareSageMakerJob,
  sagemakerClient,
  sagemakerError,
  sagemakerSettings,
  type SageMakerUi,
} from './sagemaker.js'
import {goalOf, markBest, parameterId, tuneSettings, type TrialRow} from './tune.js'

/** States after which a tuning job never changes again. */
export const TUNING_FINAL_STATES = new Set(['Completed', 'Failed', 'Stopped'])

/** The log line a trial prints for each epoch's metric, and the expression SageMaker reads it with. */
export const metricLine = (name: string, value: number) => `ml-metric ${name}=${value}`
export const metricRegex = (name: string) => `ml-metric ${name}=([-+0-9.eE]+)`

/** SageMaker tuning job names: at most 32 letters, digits and hyphens. */
export const tuningJobName = (name: string) =>
  `${name.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+/, '').slice(0, 20) || 'ml'}-tune-${randomBytes(3).toString('hex')}`

const SCALING = {linear: 'Linear', log: 'Logarithmic', reverseLog: 'ReverseLogarithmic'} as const

/** SageMaker's search strategy for tune.algorithm (halving: Hyperband, its successive-halving method). */
function strategy(tune: TuneConfig): 'Bayesian' | 'Random' | 'Grid' | 'Hyperband' {
  switch (tune.algorithm) {
    case 'random':
      return 'Random'
    case 'grid': {
      const ranged = tune.parameters.filter((p) => p.type === 'double' || p.type === 'integer')
      if (ranged.length > 0) {
        throw new UserError(`SageMaker's grid search takes only values lists, but ${ranged.map((p) => p.name).join(', ')} ${ranged.length === 1 ? 'is a range' : 'are ranges'}`, {
          code: 'CONFIG_INVALID',
          exit: 'usage',
          suggestions: ['Give those parameters type: discrete (values: [...]) or use tune.algorithm default or random.'],
        })
      }
      return 'Grid'
    }
    case 'halving':
      return 'Hyperband'
    default:
      return 'Bayesian'
  }
}

type Scaling = (typeof SCALING)[keyof typeof SCALING]
type Ranges = {
  ContinuousParameterRanges: Array<{Name: string; MinValue: string; MaxValue: string; ScalingType?: Scaling}>
  IntegerParameterRanges: Array<{Name: string; MinValue: string; MaxValue: string; ScalingType?: Scaling}>
  CategoricalParameterRanges: Array<{Name: string; Values: string[]}>
}

/** tune.parameters as SageMaker ParameterRanges (values are strings; discrete values are categorical). */
export function parameterRanges(parameters: TuneParameter[]): Ranges {
  const ranges: Ranges = {ContinuousParameterRanges: [], IntegerParameterRanges: [], CategoricalParameterRanges: []}
  for (const p of parameters) {
    const Name = parameterId(p.name)
    if (p.type === 'double' || p.type === 'integer') {
      const range = {Name, MinValue: String(p.min), MaxValue: String(p.max), ...(p.scale ? {ScalingType: SCALING[p.scale]} : {})}
      ;(p.type === 'double' ? ranges.ContinuousParameterRanges : ranges.IntegerParameterRanges).push(range)
    } else ranges.CategoricalParameterRanges.push({Name, Values: p.values.map(String)})
  }
  return ranges
}

/** The HyperParameterTuningJobConfig of tune (epochs: the trials' train.epochs, Hyperband's largest budget). */
export function tuningJobConfig(tune: TuneConfig, epochs: number) {
  const Strategy = strategy(tune)
  return {
    Strategy,
    ...(Strategy === 'Hyperband' ? {StrategyConfig: {HyperbandStrategyConfig: {MinResource: 1, MaxResource: epochs}}} : {}),
    HyperParameterTuningJobObjective: {Type: goalOf(tune) === 'maximize' ? ('Maximize' as const) : ('Minimize' as const), MetricName: tune.metric},
    ResourceLimits: {MaxNumberOfTrainingJobs: tune.maxTrials, MaxParallelTrainingJobs: tune.parallelTrials},
    ParameterRanges: parameterRanges(tune.parameters),
    TrainingJobEarlyStoppingType: 'Off' as const,
  }
}

/**
 * Inside a trial: the config overrides its hyperparameters carry (ids mapped back to the keys of
 * tune.parameters; numbers for all but categorical parameters). Empty outside a tuning job.
 */
export function trialOverrides(tune: TuneConfig | undefined, hyperparameters: Record<string, string>): Record<string, unknown> {
  const overrides: Record<string, unknown> = {}
  for (const p of tune?.parameters ?? []) {
    const raw = hyperparameters[parameterId(p.name)]
    if (raw === undefined) continue
    // SageMaker may hand values over JSON-quoted (the SDKs' habit): "\"0.01\"".
    const text = raw.replace(/^"(.*)"$/, '$1')
    if (p.type === 'categorical') {
      overrides[p.name] = text
      continue
    }
    const value = Number(text)
    if (!Number.isFinite(value)) {
      throw new UserError(`hyperparameter ${parameterId(p.name)} is ${raw}, not a number, for ${p.name}`, {code: 'CONFIG_INVALID', exit: 'usage'})
    }
    overrides[p.name] = value
  }
  return overrides
}

export interface SageMakerTuneResult {
  job: string
  arn?: string
  state: string
  outputDir: string
  configUri: string
  detached?: boolean
  metric: string
  goal: 'maximize' | 'minimize'
  trials: TrialRow[]
  best?: TrialRow
  failureReason?: string
}

interface TuningView {
  state: string
  failureReason?: string
  counters?: Record<string, number | undefined>
  best?: string
}

async function describeTuning(client: SageMakerClient, name: string): Promise<TuningView> {
  const {DescribeHyperParameterTuningJobCommand} = await import('@aws-sdk/client-sagemaker')
  try {
    const job = await client.send(new DescribeHyperParameterTuningJobCommand({HyperParameterTuningJobName: name}))
    return {
      state: job.HyperParameterTuningJobStatus ?? 'Unknown',
      ...(job.FailureReason ? {failureReason: job.FailureReason} : {}),
      ...(job.TrainingJobStatusCounters ? {counters: {...job.TrainingJobStatusCounters}} : {}),
      ...(job.BestTrainingJob?.TrainingJobName ? {best: job.BestTrainingJob.TrainingJobName} : {}),
    }
  } catch (error) {
    throw sagemakerError(error, `read tuning job ${name}`)
  }
}

const TRIAL_STATE: Record<string, string> = {Completed: 'SUCCEEDED', Failed: 'FAILED', Stopped: 'STOPPED', Stopping: 'STOPPING', InProgress: 'ACTIVE'}

/** The tuning job's training jobs as trial rows (ListTrainingJobsForHyperParameterTuningJob, every page). */
export async function tuningTrials(client: SageMakerClient, name: string, tune: TuneConfig, best?: string): Promise<TrialRow[]> {
  const {ListTrainingJobsForHyperParameterTuningJobCommand} = await import('@aws-sdk/client-sagemaker')
  const keys = new Map(tune.parameters.map((p) => [parameterId(p.name), p]))
  const rows: TrialRow[] = []
  let NextToken: string | undefined
  do {
    const page = await client
      .send(new ListTrainingJobsForHyperParameterTuningJobCommand({HyperParameterTuningJobName: name, MaxResults: 100, ...(NextToken ? {NextToken} : {})}))
      .catch((error: unknown) => {
        throw sagemakerError(error, `list the trials of tuning job ${name}`)
      })
    for (const summary of page.TrainingJobSummaries ?? []) {
      const parameters: Record<string, number | string> = {}
      for (const [id, raw] of Object.entries(summary.TunedHyperParameters ?? {})) {
        const p = keys.get(id)
        const text = raw.replace(/^"(.*)"$/, '$1')
        parameters[p?.name ?? id] = p && p.type !== 'categorical' ? Number(text) : text
      }
      const row: TrialRow = {id: summary.TrainingJobName ?? '', state: TRIAL_STATE[summary.TrainingJobStatus ?? ''] ?? String(summary.TrainingJobStatus ?? ''), parameters}
      const value = summary.FinalHyperParameterTuningJobObjectiveMetric?.Value
      if (typeof value === 'number') row.metric = value
      rows.push(row)
    }
    NextToken = page.NextToken
  } while (NextToken)
  rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const chosen = best ? rows.find((r) => r.id === best && r.metric !== undefined) : undefined
  if (!chosen) return markBest(rows, tune)
  chosen.best = true
  return rows
}

async function stopTuning(client: SageMakerClient, name: string): Promise<{state: string}> {
  const before = await describeTuning(client, name)
  if (TUNING_FINAL_STATES.has(before.state)) {
    throw new UserError(`tuning job ${name} already ended (${before.state}); nothing to stop`, {code: 'SAGEMAKER_JOB_ENDED', exit: 'usage', details: before})
  }
  const {StopHyperParameterTuningJobCommand} = await import('@aws-sdk/client-sagemaker')
  await client.send(new StopHyperParameterTuningJobCommand({HyperParameterTuningJobName: name})).catch((error: unknown) => {
    throw sagemakerError(error, `stop tuning job ${name}`)
  })
  return describeTuning(client, name)
}

/** `ml train status|cancel` for a tuning job's name: its state and trials, or a stop request. */
export async function tuningJobStatus(name: string, options: {stop?: boolean} = {}): Promise<TuningView & {name: string}> {
  const {client, check} = await sagemakerClient()
  try {
    await check()
    return {name, ...(options.stop ? await stopTuning(client, name) : await describeTuning(client, name))}
  } finally {
    client.destroy()
  }
}

/**
 * Submits the tuning job and (unless detached) follows it to the end; returns the trials, best marked.
 * Ctrl-C asks whether to stop the job on a terminal and stops it elsewhere (exit 130).
 */
export async function tuneOnSageMaker(loaded: LoadedConfig, options: {detach?: boolean; signal?: AbortSignal; ui: SageMakerUi}): Promise<SageMakerTuneResult> {
  const tune = tuneSettings(loaded)
  const settings = sagemakerSettings(loaded.config)
  const jobConfig = tuningJobConfig(tune, loaded.config.train.epochs)
  const {client, check} = await sagemakerClient(settings.region)
  try {
    await check()
    const name = tuningJobName(loaded.config.name)
    const {outputDir, configUri, AlgorithmSpecification, ...definition} = await prepareSageMakerJob(loaded, name, '`ml tune --target sagemaker`')
    const {CreateHyperParameterTuningJobCommand} = await import('@aws-sdk/client-sagemaker')
    const created = await client
      .send(
        new CreateHyperParameterTuningJobCommand({
          HyperParameterTuningJobName: name,
          HyperParameterTuningJobConfig: jobConfig,
          TrainingJobDefinition: {
            ...definition,
            AlgorithmSpecification: {...AlgorithmSpecification, MetricDefinitions: [{Name: tune.metric, Regex: metricRegex(tune.metric)}]},
            StaticHyperParameters: {'ml-config': configUri},
          },
          Tags: [{Key: 'ml-model', Value: loaded.config.name}],
        }),
      )
      .catch((error: unknown) => {
        throw sagemakerError(error, 'create the tuning job')
      })
    options.ui.note(`submitted SageMaker tuning job ${name} (${jobConfig.Strategy}): ${tune.maxTrials} trials, ${tune.parallelTrials} at a time on ${settings.instanceType}; outputs under ${outputDir}`)
    const base = {job: name, ...(created.HyperParameterTuningJobArn ? {arn: created.HyperParameterTuningJobArn} : {}), outputDir, configUri, metric: tune.metric, goal: goalOf(tune)}
    if (options.detach) return {...base, state: 'InProgress', detached: true, trials: []}
    const view = await followSageMaker(() => describeTuning(client, name), {
      finalStates: TUNING_FINAL_STATES,
      ...(options.signal ? {signal: options.signal} : {}),
      onRead: (v) => {
        const done = v.counters ? (v.counters.Completed ?? 0) + (v.counters.Stopped ?? 0) + (v.counters.NonRetryableError ?? 0) : undefined
        options.ui.spinner.update(`tuning job ${name}: ${v.state}${done === undefined ? '' : `, ${done}/${tune.maxTrials} trials done`}`)
      },
    })
    options.ui.spinner.stop()
    const trials = await tuningTrials(client, name, tune, view.best)
    const best = trials.find((t) => t.best)
    if (options.signal?.aborted && !TUNING_FINAL_STATES.has(view.state)) {
      await interruptedSageMakerJob('tuning job', name, options.ui, () => stopTuning(client, name), {...base, trials})
      return {...base, state: view.state, detached: true, trials, ...(best ? {best} : {})}
    }
    if (view.state !== 'Completed') {
      throw new UserError(`SageMaker tuning job ${name} ${view.state.toLowerCase()}${view.failureReason ? `: ${view.failureReason}` : ''}`, {
        code: view.state === 'Stopped' ? 'SAGEMAKER_JOB_STOPPED' : 'SAGEMAKER_JOB_FAILED',
        exit: 'service',
        details: {...base, state: view.state, trials, ...(view.failureReason ? {failureReason: view.failureReason} : {})},
        suggestions: ["See each trial's CloudWatch logs (/aws/sagemaker/TrainingJobs, stream <trial job name>/...) and `ml train status <trial job name>`."],
      })
    }
    return {...base, state: view.state, trials, ...(best ? {best} : {})}
  } finally {
    client.destroy()
  }
}
