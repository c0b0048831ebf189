// Training on Vertex AI: `ml train --target vertex` uploads the resolved config to gs:// and submits a
// CustomJob whose container runs `ml train` on it; this module builds, follows, reports and cancels it.
import {randomBytes} from 'node:crypto'
import {stringify} from 'yaml'
import type {LoadedConfig} from '../config/load.js'
import {resolvePath} from '../config/load.js'
import {durationSeconds, type VertexConfig} from '../config/cloud-schema.js'
import type {MlConfig} from '../config/schema.js'
import {
  isTransient,
  jobServiceClient,
  locationOfName,
  parentOf as vertexParent,
  vertexCall,
  vertexError,
  type JobServiceClient,
  type VertexLocation,
} from '../cloud/vertex-client.js'
import {exists, isCloudStorage, joinPath, parentOf, readBytes, readJson, readText, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
import {newRunId, RUN_FILES, type RunInfo} from '../model/run-dir.js'
import {followRemoteJob, interruptedJob, pollIntervalFrom, type FollowRemoteJobOptions, type RemoteJobUi} from './remote-job.js'

/** States after which a job never changes again. */
export const FINAL_STATES = new Set([
  'JOB_STATE_SUCCEEDED',
  'JOB_STATE_FAILED',
  'JOB_STATE_CANCELLED',
  'JOB_STATE_EXPIRED',
  'JOB_STATE_PARTIALLY_SUCCEEDED',
])

/** How often a followed job is read (ML_VERTEX_POLL_MS; a job's state changes on a scale of minutes). */
export const pollIntervalMs = (env: NodeJS.ProcessEnv = process.env) => pollIntervalFrom('ML_VERTEX_POLL_MS', env)

/** What ml reads from a job resource (CustomJob or HyperparameterTuningJob). */
export interface JobView {
  name: string
  displayName: string
  state: string
  createTime?: string
  startTime?: string
  endTime?: string
  error?: string
  outputDir?: string
  webAccessUris?: Record<string, string>
}

type Timestamp = {seconds?: number | string | Long | null; nanos?: number | null} | null | undefined
type Long = {toString(): string}

function isoOf(t: Timestamp): string | undefined {
  if (!t || t.seconds === undefined || t.seconds === null) return undefined
  return new Date(Number(String(t.seconds)) * 1000 + Math.round((t.nanos ?? 0) / 1e6)).toISOString()
}

interface JobLike {
  name?: string | null
  displayName?: string | null
  state?: unknown
  createTime?: Timestamp
  startTime?: Timestamp
  endTime?: Timestamp
  error?: {message?: string | null} | null
  jobSpec?: {baseOutputDirectory?: {outputUriPrefix?: string | null} | null} | null
  trialJobSpec?: {baseOutputDirectory?: {outputUriPrefix?: string | null} | null} | null
}

/** The fields of a job that ml shows, as plain JSON. */
export function viewJob(job: JobLike): JobView {
  const spec = job.jobSpec ?? job.trialJobSpec
  const view: JobView = {name: job.name ?? '', displayName: job.displayName ?? '', state: String(job.state ?? 'JOB_STATE_UNSPECIFIED')}
  const created = isoOf(job.createTime)
  const started = isoOf(job.startTime)
  const ended = isoOf(job.endTime)
  if (created) view.createTime = created
  if (started) view.startTime = started
  if (ended) view.endTime = ended
  if (job.error?.message) view.error = job.error.message
  const out = spec?.baseOutputDirectory?.outputUriPrefix
  if (out) view.outputDir = out.replace(/\/+$/, '')
  return view
}

/** A job name as given by the user: a full resource name, or a numeric id under train.vertex's project and region. */
export function resolveJobName(ref: string, kind: 'customJobs' | 'hyperparameterTuningJobs', vertex: VertexLocation | undefined): string {
  if (locationOfName(ref)) return ref
  if (/^\d+$/.test(ref) && vertex) return `${vertexParent(vertex)}/${kind}/${ref}`
  throw new UserError(`"${ref}" is not a Vertex AI job name`, {
    code: 'USAGE',
    exit: 'usage',
    suggestions: [`Pass the full name (projects/<project>/locations/<region>/${kind}/<id>), or the id with a config that sets train.vertex.`],
  })
}

/** train.vertex, or a UserError saying what to add. */
export function vertexSettings(config: MlConfig, what = '`ml train --target vertex`'): VertexConfig {
  const vertex = config.train.vertex
  if (!vertex) {
    throw new UserError(`${what} needs train.vertex in the config (project, region, image, baseOutputDir)`, {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      suggestions: ['Add train.vertex: {project: my-project, region: us-central1, image: <ml image>, baseOutputDir: gs://my-bucket/ml}; see docs/google-cloud.md.'],
    })
  }
  return vertex
}

export interface PreparedJob {
  displayName: string
  /** gs:// prefix of this job's outputs (its baseOutputDirectory). */
  outputDir: string
  /** The config the job's container reads. */
  configUri: string
  /** The config as uploaded (train.target local, paths resolved). */
  config: MlConfig
  /** The worker pool's CustomJobSpec (REST JSON shape). */
  jobSpec: Record<string, unknown>
}

/**
 * What a job needs from the config, checked before anything is sent: train.vertex, and a dataset
 * the job can read (only Cloud Storage is reachable from Vertex AI).
 */
export function checkJobInputs(loaded: LoadedConfig, what?: string): {vertex: VertexConfig; store: string} {
  const vertex = vertexSettings(loaded.config, what)
  const store = resolvePath(loaded, loaded.config.data.store)
  if (!isCloudStorage(store)) {
    throw new UserError(`data.store is ${store}: a Vertex AI job cannot read a local dataset`, {
      code: 'VERTEX_LOCAL_DATA',
      exit: 'usage',
      suggestions: ['Ingest into Cloud Storage: set data.store: gs://<bucket>/<path> and run `ml ingest` (sources may stay local).'],
    })
  }
  return {vertex, store}
}

/** <name>-<timestamp>-<4 hex>: the suffix keeps two submissions in the same second apart (each has its own output prefix). */
export const jobDisplayName = (name: string) => `${newRunId(name).toLowerCase()}-${randomBytes(2).toString('hex')}`

/** Arguments of the job's container (the image's entrypoint is `node bin/run.cjs`). */
export function containerArgs(configUri: string): string[] {
  // --target local: the uploaded config already says so; passing it too means a job can never submit
  // another job whatever the config holds. --devices auto: one worker per GPU of the machine.
  return ['train', '--config', configUri, '--target', 'local', '--devices', 'auto', '--json']
}

/**
 * Builds and uploads what a job needs: checks that its inputs are reachable from Google Cloud, writes
 * the resolved config to <baseOutputDir>/<display name>/config.yaml, and returns the job spec.
 * Each job gets its own output prefix so that two submissions never overwrite each other's config.
 */
export async function prepareJob(loaded: LoadedConfig, options: {displayName?: string; args?: string[]; env?: Record<string, string>} = {}): Promise<PreparedJob> {
  const {config} = loaded
  const {vertex, store} = checkJobInputs(loaded)
  const displayName = options.displayName ?? jobDisplayName(config.name)
  const outputDir = joinPath(vertex.baseOutputDir, displayName)
  const configUri = joinPath(outputDir, 'config.yaml')
  const uploaded: MlConfig = {
    ...config,
    data: {...config.data, store},
    train: {...config.train, target: 'local', runs: joinPath(outputDir, 'runs')},
  }
  await writeFileAtomic(configUri, `# Written by \`ml train --target vertex\` for Vertex AI job ${displayName}.\n` + stringify(uploaded))
  const acceleratorCount = vertex.acceleratorCount ?? (vertex.acceleratorType ? 1 : undefined)
  const jobSpec: Record<string, unknown> = {
    workerPoolSpecs: [
      {
        machineSpec: {
          machineType: vertex.machineType,
          ...(vertex.acceleratorType ? {acceleratorType: vertex.acceleratorType, acceleratorCount} : {}),
        },
        replicaCount: vertex.replicaCount,
        containerSpec: {
          imageUri: vertex.image,
          args: options.args ?? containerArgs(configUri),
          env: Object.entries({ML_VERTEX_JOB: displayName, ...options.env}).map(([name, value]) => ({name, value})),
        },
      },
    ],
    // Vertex sets AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR under this prefix.
    baseOutputDirectory: {outputUriPrefix: `${outputDir}/`},
    ...(vertex.timeout ? {scheduling: {timeout: {seconds: durationSeconds(vertex.timeout)}}} : {}),
    ...(vertex.serviceAccount ? {serviceAccount: vertex.serviceAccount} : {}),
  }
  return {displayName, outputDir, configUri, config: uploaded, jobSpec}
}

const labelValue = (text: string) => text.toLowerCase().replace(/[^a-z0-9_-]/g, '-').slice(0, 63)

/** Submits the CustomJob; returns its view (name, state). */
export async function submitTrainingJob(loaded: LoadedConfig, prepared: PreparedJob, client?: JobServiceClient): Promise<JobView> {
  const vertex = vertexSettings(loaded.config)
  const jobs = client ?? (await jobServiceClient(vertex.region))
  const [job] = await vertexCall('submit the training job', () =>
    jobs.createCustomJob({
      parent: vertexParent(vertex),
      customJob: {
        displayName: prepared.displayName,
        jobSpec: prepared.jobSpec,
        labels: {'ml-model': labelValue(loaded.config.name), 'ml-tool': 'ml'},
      },
    }),
  )
  return viewJob(job as JobLike)
}

/** What followJob reports to (onState), and when it stops (signal); pollMs defaults to ML_VERTEX_POLL_MS. */
export type FollowOptions = Pick<FollowRemoteJobOptions<JobView>, 'onState' | 'signal'> & {pollMs?: number}

/**
 * Reads a job until it reaches a final state (or `signal` aborts). Brief service trouble is waited
 * out; a job that cannot be read for MAX_POLL_FAILURES polls in a row ends following with an error.
 */
export function followJob(read: () => Promise<JobLike>, options: FollowOptions = {}): Promise<JobView> {
  return followRemoteJob(async () => viewJob(await read()), {...options, finalStates: FINAL_STATES, isTransient, pollMs: options.pollMs ?? pollIntervalMs()})
}

const kindOf = (name: string) => (name.includes('/hyperparameterTuningJobs/') ? 'tuning' : 'custom')

async function readJob(jobs: JobServiceClient, name: string): Promise<JobLike> {
  const [job] =
    kindOf(name) === 'tuning'
      ? await vertexCall(`read job ${name}`, () => jobs.getHyperparameterTuningJob({name}))
      : await vertexCall(`read job ${name}`, () => jobs.getCustomJob({name}))
  return job as JobLike
}

async function clientFor(name: string, client?: JobServiceClient): Promise<{jobs: JobServiceClient; close(): Promise<void>}> {
  if (client) return {jobs: client, close: async () => {}}
  const jobs = await jobServiceClient(locationOfName(name)!.region)
  return {jobs, close: () => jobs.close()}
}

/** The current view of a training or tuning job, by its full resource name. */
export async function getJob(name: string, client?: JobServiceClient): Promise<JobView & {raw: JobLike}> {
  const {jobs, close} = await clientFor(name, client)
  try {
    const job = await readJob(jobs, name)
    return {...viewJob(job), raw: job}
  } finally {
    await close()
  }
}

/** Asks Vertex AI to cancel a job (it goes to CANCELLING, then CANCELLED); returns the job after the request. */
export async function cancelJob(name: string, client?: JobServiceClient): Promise<JobView> {
  const {jobs, close} = await clientFor(name, client)
  try {
    const before = viewJob(await readJob(jobs, name))
    if (FINAL_STATES.has(before.state)) {
      throw new UserError(`job ${name} already ended (${before.state}); nothing to cancel`, {code: 'VERTEX_JOB_ENDED', exit: 'usage', details: before})
    }
    if (kindOf(name) === 'tuning') await vertexCall(`cancel job ${name}`, () => jobs.cancelHyperparameterTuningJob({name}))
    else await vertexCall(`cancel job ${name}`, () => jobs.cancelCustomJob({name}))
    return viewJob(await readJob(jobs, name))
  } finally {
    await close()
  }
}

/** What a finished training job left: the run that its container wrote under <outputDir>/runs. */
export interface JobRun {
  runId: string
  runDir: string
  status: string
  final?: RunInfo['final']
}

/** Reads the run a succeeded job wrote (its runs/LATEST and run.json); undefined when there is none. */
export async function jobRun(outputDir: string): Promise<JobRun | undefined> {
  const runs = joinPath(outputDir, 'runs')
  const latest = joinPath(runs, 'LATEST')
  if (!(await exists(latest))) return undefined
  const runId = (await readText(latest)).trim()
  const runDir = joinPath(runs, runId)
  const info = await readJson<RunInfo>(joinPath(runDir, RUN_FILES.info))
  return {runId, runDir, status: info.status, ...(info.final ? {final: info.final} : {})}
}

/** A failed, cancelled or expired job as the error `ml train` exits with (5: a remote service failed). */
export function jobFailure(view: JobView, extra: Record<string, unknown> = {}): UserError {
  const ended = view.state.replace('JOB_STATE_', '').toLowerCase().replace('_', ' ')
  return new UserError(`Vertex AI job ${view.name} ${ended}${view.error ? `: ${view.error}` : ''}`, {
    code: view.state === 'JOB_STATE_CANCELLED' ? 'VERTEX_JOB_CANCELLED' : 'VERTEX_JOB_FAILED',
    exit: 'service',
    details: {...view, ...extra},
    suggestions: [
      `Logs: gcloud ai ${view.name.includes('/hyperparameterTuningJobs/') ? 'hp-tuning-jobs' : 'custom-jobs'} stream-logs ${view.name}` +
        (locationOfName(view.name) ? ` --region ${locationOfName(view.name)!.region}` : ''),
    ],
  })
}

/**
 * Inside a Vertex AI job (AIP_CHECKPOINT_DIR set by baseOutputDirectory): runs go next to the
 * checkpoint folder, i.e. <job output>/runs, so every trial of a tuning job keeps its own.
 */
export function vertexRunsDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const checkpoints = env.AIP_CHECKPOINT_DIR
  if (!checkpoints) return undefined
  return joinPath(parentOf(checkpoints.replace(/\/+$/, '')), 'runs')
}

/**
 * Copies a finished run's model (model.json, weights, labels, preprocessing) to AIP_MODEL_DIR, where
 * Vertex AI and its pipelines expect a job's model artifacts.
 */
export async function publishModelDir(runDir: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const target = env.AIP_MODEL_DIR?.replace(/\/+$/, '')
  if (!target) return undefined
  const model = joinPath(runDir, RUN_FILES.model)
  // Weights before model.json, which names them.
  for (const file of ['weights.bin', 'model.json']) await writeFileAtomic(joinPath(target, file), await readBytes(joinPath(model, file)))
  for (const file of [RUN_FILES.labels, RUN_FILES.preprocessing]) await writeFileAtomic(joinPath(target, file), await readBytes(joinPath(runDir, file)))
  return target
}

export type VertexUi = RemoteJobUi

export interface VertexTrainResult {
  job: string
  displayName: string
  state: string
  outputDir: string
  configUri: string
  /** True when ml stopped following (--detach, or Ctrl-C answered "no"): the job goes on. */
  detached?: boolean
  startTime?: string
  endTime?: string
  /** The run the job's container wrote (when it succeeded). */
  run?: JobRun
}

/**
 * `ml train --target vertex`: uploads the config, submits the job and follows it with a spinner.
 * Ctrl-C (signal) asks whether to cancel the job on a terminal, and cancels it otherwise; a job that
 * fails ends the command with its error (exit 5).
 */
export async function trainOnVertex(
  loaded: LoadedConfig,
  options: {detach?: boolean; signal?: AbortSignal; ui: VertexUi; pollMs?: number; client?: JobServiceClient},
): Promise<VertexTrainResult> {
  const {vertex} = checkJobInputs(loaded)
  const {ui} = options
  // The client before the upload: missing credentials fail before anything is written.
  const jobs = options.client ?? (await jobServiceClient(vertex.region))
  try {
    const prepared = await prepareJob(loaded)
    const submitted = await submitTrainingJob(loaded, prepared, jobs)
    const name = submitted.name
    ui.note(`submitted Vertex AI job ${name} (${prepared.displayName}); config ${prepared.configUri}`)
    const base = {job: name, displayName: prepared.displayName, outputDir: prepared.outputDir, configUri: prepared.configUri}
    if (options.detach) return {...base, state: submitted.state, detached: true}
    const final = await followJob(() => readJob(jobs, name), {
      ...(options.signal ? {signal: options.signal} : {}),
      ...(options.pollMs ? {pollMs: options.pollMs} : {}),
      onState: (view) => ui.spinner.update(`${name}: ${view.state}`),
    }).catch((error: unknown) => {
      throw vertexError(error, `read job ${name}`)
    })
    const times = {...(final.startTime ? {startTime: final.startTime} : {}), ...(final.endTime ? {endTime: final.endTime} : {})}
    if (options.signal?.aborted && !FINAL_STATES.has(final.state)) {
      ui.spinner.stop()
      const end = () => cancelJob(name, jobs)
      await interruptedJob(ui, {service: 'Vertex AI', kind: 'job', name, verb: 'cancel', lookAgain: 'follow it with', end, details: base})
      return {...base, state: final.state, detached: true, ...times}
    }
    if (final.state !== 'JOB_STATE_SUCCEEDED') {
      ui.spinner.fail(`${name}: ${final.state}`)
      throw jobFailure(final, base)
    }
    ui.spinner.succeed(`${name}: JOB_STATE_SUCCEEDED`)
    // The job's own output: read back for the summary, but a job that wrote none still succeeded.
    const run = await jobRun(prepared.outputDir).catch(() => undefined)
    return {...base, state: final.state, ...times, ...(run ? {run} : {})}
  } finally {
    if (!options.client) await jobs.close()
  }
}
