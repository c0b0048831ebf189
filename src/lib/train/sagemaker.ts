// Training on SageMaker: `ml train --target sagemaker` uploads the resolved config to s3:// and creates
// a training job whose container (the ml image) runs `ml train`; this module builds, follows, reports
// and stops it, and, inside the job, maps SageMaker's container contract onto `ml train`:
//   - SageMaker starts the image with the argument `train` (the image's entrypoint is ml): `ml train`.
//   - The config's s3:// URI comes in the job's environment (ML_CONFIG) and hyperparameters (ml-config).
//   - The dataset store is the input channel `training`, copied to SM_CHANNEL_TRAINING
//     (/opt/ml/input/data/training) before the container starts (File mode).
//   - The model goes to SM_MODEL_DIR (/opt/ml/model), which SageMaker uploads as output/model.tar.gz;
//     the run directory itself is written to s3:// under the job's output prefix.
//   - A failure is written to /opt/ml/output/failure, which SageMaker shows as the job's FailureReason.
import {randomBytes} from 'node:crypto'
import {mkdir, writeFile} from 'node:fs/promises'
import path from 'node:path'
import type {SageMakerClient, TrainingInstanceType} from '@aws-sdk/client-sagemaker'
import {stringify} from 'yaml'
import type {LoadedConfig} from '../config/load.js'
import {resolvePath} from '../config/load.js'
import type {MlConfig, SageMakerConfig} from '../config/schema.js'
import {awsSettingsFromEnv, clientOptions, credentialCheck, isAuthError, statusOf} from '../cloud/aws.js'
import {UserError} from '../errors.js'
import {newRunId, RUN_FILES} from '../model/run-dir.js'
import {isS3, joinPath, readBytes, writeFileAtomic} from '../storage/index.js'
import {followRemoteJob, interruptedJob, pollIntervalFrom, type RemoteJobUi} from './remote-job.js'
import {jobRun, type JobRun} from './vertex.js'

/** States after which a training job never changes again. */
export const FINAL_STATES = new Set(['Completed', 'Failed', 'Stopped'])

/** How often a followed job is read (ML_SAGEMAKER_POLL_MS; DescribeTrainingJob is rate-limited). */
export const pollIntervalMs = (env: NodeJS.ProcessEnv = process.env) => pollIntervalFrom('ML_SAGEMAKER_POLL_MS', env)

export interface SageMakerJobView {
  name: string
  arn?: string
  state: string
  /** SageMaker's finer status: Starting, Downloading, Training, Uploading, Completed... */
  secondaryState?: string
  failureReason?: string
  createTime?: string
  startTime?: string
  endTime?: string
  /** s3:// prefix the job writes under (config.yaml, runs/). */
  outputDir?: string
  /** s3:// URI of the model.tar.gz SageMaker made of SM_MODEL_DIR. */
  modelArtifacts?: string
}

export async function sagemakerClient(region?: string): Promise<{client: SageMakerClient; check: () => Promise<void>}> {
  const {SageMakerClient} = await import('@aws-sdk/client-sagemaker')
  const settings = awsSettingsFromEnv('sagemaker')
  const client = new SageMakerClient({...clientOptions({...settings, ...(region ? {region} : {})})})
  return {client, check: credentialCheck('SageMaker', client)}
}

export function sagemakerError(error: unknown, action: string): Error {
  if (error instanceof UserError) return error
  const name = (error as {name?: string} | undefined)?.name ?? ''
  const message = (error as Error | undefined)?.message ?? String(error)
  if (isAuthError(error)) return new UserError(`no usable AWS credentials for SageMaker: ${message}`, {code: 'AWS_AUTH', exit: 'service', cause: error})
  if (name === 'ResourceNotFound' || name === 'ValidationException' && /not found|could not find|does not exist/i.test(message)) {
    return new UserError(`SageMaker could not ${action}: ${message}`, {code: 'SAGEMAKER_JOB_NOT_FOUND', exit: 'usage', cause: error, suggestions: ['Check the job name and the region (AWS_REGION or train.sagemaker.region).']})
  }
  if (name === 'AccessDeniedException' || statusOf(error) === 403) {
    return new UserError(`permission denied to ${action}: ${message}`, {
      code: 'SAGEMAKER_FORBIDDEN',
      exit: 'service',
      cause: error,
      suggestions: ['Allow sagemaker:CreateTrainingJob, sagemaker:DescribeTrainingJob, sagemaker:StopTrainingJob and iam:PassRole on train.sagemaker.roleArn to the identity in use.'],
    })
  }
  return new UserError(`SageMaker failed to ${action}: ${message}`, {code: 'SAGEMAKER_UNAVAILABLE', exit: 'service', cause: error, suggestions: ['Retried with backoff already; run the command again.']})
}

/** train.sagemaker, or a UserError saying what to add. */
export function sagemakerSettings(config: MlConfig): SageMakerConfig {
  const settings = config.train.sagemaker
  if (!settings) {
    throw new UserError('`ml train --target sagemaker` needs train.sagemaker in the config (roleArn, image, outputPath)', {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      suggestions: ['Add train.sagemaker: {roleArn: arn:aws:iam::<account>:role/<role>, image: <ECR image of ml>, outputPath: s3://my-bucket/ml}; see docs/aws.md.'],
    })
  }
  return settings
}

/**
 * True for a job reference `ml train status|cancel` should look up in SageMaker: a training or tuning job ARN,
 * or a name that is neither a Vertex AI resource name nor a numeric Vertex job id.
 */
export const isSageMakerJobRef = (ref: string) => ref.startsWith('arn:aws') ? /:(training-job|hyper-parameter-tuning-job)\//.test(ref) : !ref.startsWith('projects/') && !/^\d+$/.test(ref)

/** A tuning job's ARN (or a name, which may be either kind: `ml train status|cancel` tries a training job first). */
export const isTuningJobArn = (ref: string) => /^arn:aws.*:hyper-parameter-tuning-job\//.test(ref)

/** SageMaker job names: up to 63 letters, digits and hyphens. */
export const jobName = (name: string) => `${newRunId(name).toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 56)}-${randomBytes(2).toString('hex')}`

type Described = {
  TrainingJobName?: string
  TrainingJobArn?: string
  TrainingJobStatus?: string
  SecondaryStatus?: string
  FailureReason?: string
  CreationTime?: Date
  TrainingStartTime?: Date
  TrainingEndTime?: Date
  ModelArtifacts?: {S3ModelArtifacts?: string}
  HyperParameters?: Record<string, string>
}

export function viewJob(job: Described): SageMakerJobView {
  const view: SageMakerJobView = {name: job.TrainingJobName ?? '', state: job.TrainingJobStatus ?? 'Unknown'}
  if (job.TrainingJobArn) view.arn = job.TrainingJobArn
  if (job.SecondaryStatus) view.secondaryState = job.SecondaryStatus
  if (job.FailureReason) view.failureReason = job.FailureReason
  if (job.CreationTime) view.createTime = new Date(job.CreationTime).toISOString()
  if (job.TrainingStartTime) view.startTime = new Date(job.TrainingStartTime).toISOString()
  if (job.TrainingEndTime) view.endTime = new Date(job.TrainingEndTime).toISOString()
  const config = job.HyperParameters?.['ml-config']
  if (config) view.outputDir = config.replace(/\/config\.yaml$/, '')
  if (job.ModelArtifacts?.S3ModelArtifacts) view.modelArtifacts = job.ModelArtifacts.S3ModelArtifacts
  return view
}

export async function describeJob(name: string, client?: SageMakerClient): Promise<SageMakerJobView> {
  const own = client ? undefined : await sagemakerClient()
  const c = client ?? own!.client
  try {
    await own?.check()
    const {DescribeTrainingJobCommand} = await import('@aws-sdk/client-sagemaker')
    return viewJob(await c.send(new DescribeTrainingJobCommand({TrainingJobName: name.replace(/^arn:.*:training-job\//, '')})))
  } catch (error) {
    throw sagemakerError(error, `read training job ${name}`)
  } finally {
    own?.client.destroy()
  }
}

export async function stopJob(name: string, shared?: SageMakerClient): Promise<SageMakerJobView> {
  const own = shared ? undefined : await sagemakerClient()
  const client = shared ?? own!.client
  try {
    await own?.check()
    const before = await describeJob(name, client)
    if (FINAL_STATES.has(before.state)) {
      throw new UserError(`job ${name} already ended (${before.state}); nothing to cancel`, {code: 'SAGEMAKER_JOB_ENDED', exit: 'usage', details: before})
    }
    const {StopTrainingJobCommand} = await import('@aws-sdk/client-sagemaker')
    await client.send(new StopTrainingJobCommand({TrainingJobName: before.name})).catch((error: unknown) => {
      throw sagemakerError(error, `stop training job ${name}`)
    })
    return await describeJob(name, client)
  } finally {
    own?.client.destroy()
  }
}

/** The run a completed job wrote under its output prefix, if any. */
export const jobRunOf = (outputDir: string) => jobRun(outputDir).catch(() => undefined)

/** A failed or stopped job as the error `ml train` exits with (5: a remote service failed), with SageMaker's reason. */
export function jobFailure(view: SageMakerJobView): UserError {
  return new UserError(`SageMaker training job ${view.name} ${view.state.toLowerCase()}${view.failureReason ? `: ${view.failureReason}` : ''}`, {
    code: view.state === 'Stopped' ? 'SAGEMAKER_JOB_STOPPED' : 'SAGEMAKER_JOB_FAILED',
    exit: 'service',
    details: view,
    suggestions: ['See the job\'s CloudWatch logs (/aws/sagemaker/TrainingJobs, stream <job name>/...) for the container output.'],
  })
}

export type SageMakerUi = RemoteJobUi

export interface SageMakerTrainResult {
  job: string
  arn?: string
  detached: boolean
  state: string
  outputDir: string
  configUri: string
  modelArtifacts?: string
  run?: JobRun
}

/** What a training job and every trial of a tuning job share: the uploaded config and the job's resources. */
export interface SageMakerJobDefinition {
  /** s3:// prefix the job writes under (config.yaml, runs/, output/). */
  outputDir: string
  configUri: string
  AlgorithmSpecification: {TrainingImage: string; TrainingInputMode: 'File'}
  RoleArn: string
  InputDataConfig: Array<{ChannelName: string; DataSource: {S3DataSource: {S3Uri: string; S3DataType: 'S3Prefix'; S3DataDistributionType: 'FullyReplicated'}}}>
  OutputDataConfig: {S3OutputPath: string}
  ResourceConfig: {InstanceType: TrainingInstanceType; InstanceCount: number; VolumeSizeInGB: number}
  StoppingCondition: {MaxRuntimeInSeconds: number}
}

/**
 * Checks that the dataset is on S3, uploads the resolved config under <outputPath>/<name>/ and returns
 * the job definition that points at it (the dataset store as the `training` channel).
 */
export async function prepareSageMakerJob(loaded: LoadedConfig, name: string, command = '`ml train --target sagemaker`'): Promise<SageMakerJobDefinition> {
  const {config} = loaded
  const settings = sagemakerSettings(config)
  const store = resolvePath(loaded, config.data.store)
  if (!isS3(store)) {
    throw new UserError(`data.store is ${store}: a SageMaker job reads its dataset from S3`, {
      code: 'SAGEMAKER_LOCAL_DATA',
      exit: 'usage',
      suggestions: ['Ingest into S3: set data.store: s3://<bucket>/<path> and run `ml ingest` (sources may stay local).'],
    })
  }
  const outputDir = joinPath(settings.outputPath, name)
  const configUri = joinPath(outputDir, 'config.yaml')
  const uploaded: MlConfig = {...config, data: {...config.data, store}, train: {...config.train, target: 'local', runs: joinPath(outputDir, 'runs')}}
  await writeFileAtomic(configUri, `# Written by ${command} for SageMaker job ${name}.\n` + stringify(uploaded))
  return {
    outputDir,
    configUri,
    AlgorithmSpecification: {TrainingImage: settings.image, TrainingInputMode: 'File'},
    RoleArn: settings.roleArn,
    InputDataConfig: [{ChannelName: 'training', DataSource: {S3DataSource: {S3Uri: `${store}/`, S3DataType: 'S3Prefix', S3DataDistributionType: 'FullyReplicated'}}}],
    OutputDataConfig: {S3OutputPath: `${outputDir}/output`},
    ResourceConfig: {InstanceType: settings.instanceType as TrainingInstanceType, InstanceCount: settings.instanceCount, VolumeSizeInGB: settings.volumeSizeGb},
    StoppingCondition: {MaxRuntimeInSeconds: settings.maxRuntime},
  }
}

/** A read that failed for a reason other than the service's trouble (no such job, no permission) is not retried. */
const isTransient = (error: unknown) => !(error instanceof UserError) || error.code === 'SAGEMAKER_UNAVAILABLE'

/**
 * Reads a job until it reaches one of `finalStates` or `signal` aborts, calling onRead with every view
 * (SageMaker's finer progress changes within a state); a read that fails with a service error is retried
 * (MAX_POLL_FAILURES in a row end it).
 */
export function followSageMaker<V extends {state: string}>(
  read: () => Promise<V>,
  options: {finalStates: ReadonlySet<string>; signal?: AbortSignal; onRead: (view: V) => void},
): Promise<V> {
  return followRemoteJob(read, {...options, isTransient, pollMs: pollIntervalMs()})
}

/**
 * After Ctrl-C while following a SageMaker job (`kind`: training job, tuning job): asks on a terminal
 * whether to stop it, and stops it elsewhere; see interruptedJob.
 */
export const interruptedSageMakerJob = (kind: string, name: string, ui: SageMakerUi, end: () => Promise<{state: string}>, details: Record<string, unknown>) =>
  interruptedJob(ui, {service: 'SageMaker', kind, name, verb: 'stop', lookAgain: 'see it with', end, details})

/**
 * Submits the training job and, unless detached, follows it with the spinner to its end. Ctrl-C asks
 * whether to stop the job (terminal) or stops it (elsewhere): see interruptedSageMakerJob.
 */
export async function trainOnSageMaker(loaded: LoadedConfig, options: {detach: boolean; signal?: AbortSignal; ui: SageMakerUi}): Promise<SageMakerTrainResult> {
  const {config} = loaded
  const settings = sagemakerSettings(config)
  const {client, check} = await sagemakerClient(settings.region)
  try {
    await check()
    const name = jobName(config.name)
    const {outputDir, configUri, ...definition} = await prepareSageMakerJob(loaded, name)
    const {CreateTrainingJobCommand} = await import('@aws-sdk/client-sagemaker')
    let created
    try {
      created = await client.send(
        new CreateTrainingJobCommand({
          TrainingJobName: name,
          ...definition,
          HyperParameters: {'ml-config': configUri},
          Environment: {ML_CONFIG: configUri},
          Tags: [{Key: 'ml-model', Value: config.name}],
        }),
      )
    } catch (error) {
      throw sagemakerError(error, 'create the training job')
    }
    options.ui.note(`submitted SageMaker training job ${name} (${settings.instanceType}); outputs under ${outputDir}`)
    const base = {job: name, ...(created.TrainingJobArn ? {arn: created.TrainingJobArn} : {}), outputDir, configUri}
    if (options.detach) return {...base, detached: true, state: 'InProgress'}
    options.ui.spinner.update(`job ${name}: InProgress`)
    const view = await followSageMaker(() => describeJob(name, client), {
      finalStates: FINAL_STATES,
      ...(options.signal ? {signal: options.signal} : {}),
      onRead: (v) => options.ui.spinner.update(`job ${name}: ${v.state}${v.secondaryState && v.secondaryState !== v.state ? ` (${v.secondaryState})` : ''}`),
    })
    options.ui.spinner.stop()
    if (options.signal?.aborted && !FINAL_STATES.has(view.state)) {
      await interruptedSageMakerJob('training job', name, options.ui, () => stopJob(name, client), base)
      return {...base, detached: true, state: view.state}
    }
    if (view.state !== 'Completed') throw jobFailure(view)
    const run = await jobRun(outputDir).catch(() => undefined)
    return {...base, detached: false, state: view.state, ...(view.modelArtifacts ? {modelArtifacts: view.modelArtifacts} : {}), ...(run ? {run} : {})}
  } finally {
    client.destroy()
  }
}

/** What `ml train` needs to know inside a SageMaker training job; undefined outside one. */
export interface SageMakerJobEnv {
  job: string
  configUri: string
  /** hyperparameters.json: ml-config, and a tuning trial's values by parameter id (train_learningRate). */
  hyperparameters: Record<string, string>
  /** The local copy of the dataset store (channel `training`). */
  channelDir: string
  /** Where SageMaker takes the model from (uploaded as model.tar.gz). */
  modelDir: string
  /** A failure written here becomes the job's FailureReason. */
  failureFile: string
}

/**
 * Recognises a SageMaker training container: TRAINING_JOB_NAME (set by SageMaker) or SM_TRAINING_ENV
 * (the sagemaker-training toolkit). SM_* variables win over the /opt/ml layout (ML_SAGEMAKER_ROOT
 * moves that root, for tests); the config comes from ML_CONFIG, else the ml-config hyperparameter.
 */
export async function sageMakerJobEnv(env: NodeJS.ProcessEnv = process.env): Promise<SageMakerJobEnv | undefined> {
  const job = env.TRAINING_JOB_NAME || (env.SM_TRAINING_ENV ? (JSON.parse(env.SM_TRAINING_ENV) as {job_name?: string}).job_name : undefined)
  if (!job) return undefined
  const root = env.ML_SAGEMAKER_ROOT || '/opt/ml'
  // The tuned values of a tuning job's trial come as hyperparameters too (SM_HPS holds the same).
  const file = env.SM_INPUT_CONFIG_DIR ? path.join(env.SM_INPUT_CONFIG_DIR, 'hyperparameters.json') : path.join(root, 'input', 'config', 'hyperparameters.json')
  const text = (await readBytes(file).catch(() => undefined))?.toString() ?? env.SM_HPS ?? '{}'
  let hyperparameters: Record<string, string>
  try {
    hyperparameters = JSON.parse(text) as Record<string, string>
  } catch (error) {
    throw new UserError(`SageMaker job ${job}: ${file} is not valid JSON: ${(error as Error).message}`, {code: 'SAGEMAKER_NO_CONFIG', exit: 'usage', cause: error})
  }
  const configUri = env.ML_CONFIG || hyperparameters['ml-config']
  if (!configUri) {
    throw new UserError(`SageMaker job ${job}: no ml config (set ML_CONFIG or the ml-config hyperparameter)`, {code: 'SAGEMAKER_NO_CONFIG', exit: 'usage'})
  }
  return {
    job,
    configUri,
    hyperparameters,
    channelDir: env.SM_CHANNEL_TRAINING || path.join(root, 'input', 'data', 'training'),
    modelDir: env.SM_MODEL_DIR || path.join(root, 'model'),
    failureFile: env.SM_OUTPUT_FAILURE || path.join(env.SM_OUTPUT_DIR || path.join(root, 'output'), 'failure'),
  }
}

/** Copies a finished run's model (model.json, weights, labels, preprocessing) into SM_MODEL_DIR. */
export async function publishSageMakerModel(runDir: string, job: SageMakerJobEnv): Promise<string> {
  const model = joinPath(runDir, RUN_FILES.model)
  await mkdir(job.modelDir, {recursive: true})
  for (const file of ['weights.bin', 'model.json']) await writeFileAtomic(path.join(job.modelDir, file), await readBytes(joinPath(model, file)))
  for (const file of [RUN_FILES.labels, RUN_FILES.preprocessing]) await writeFileAtomic(path.join(job.modelDir, file), await readBytes(joinPath(runDir, file)))
  return job.modelDir
}

/** Writes the failure SageMaker reports as the job's FailureReason (it keeps the first 1024 characters). */
export async function writeSageMakerFailure(job: SageMakerJobEnv, error: unknown): Promise<void> {
  const message = error instanceof Error ? `${(error as {code?: string}).code ? `${(error as {code?: string}).code}: ` : ''}${error.message}` : String(error)
  await mkdir(path.dirname(job.failureFile), {recursive: true}).catch(() => {})
  await writeFile(job.failureFile, message.slice(0, 1024)).catch(() => {})
}
