// Vertex AI flows through the real CLI against the Vertex AI and Cloud Storage stand-ins: submit and
// follow, failure, Ctrl-C, detach/status/cancel, tuning with a real trial, and missing credentials.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import aiplatform from '@google-cloud/aiplatform'
import {parse} from 'yaml'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {configureGcs} from '../../../src/lib/storage/gcs.js'
import {jobServiceClient} from '../../../src/lib/cloud/vertex-client.js'
import {resolveDevices} from '../../../src/lib/train/trainer.js'
import {readHypertuneFile, trialRows, trialTable} from '../../../src/lib/train/tune.js'
import {followJob, getJob} from '../../../src/lib/train/vertex.js'
import {UserError} from '../../../src/lib/errors.js'
import {runCli, runJson, startCli} from '../../support/cli.js'
import {gsConfig, startGoogleCloud, uploadMnist, type GoogleCloudStandIns} from '../../support/cloud-fixtures.js'
import type {GcsServer} from '../../support/gcs-server.js'
import type {JobResource, VertexServer} from '../../support/vertex-server.js'

const BUCKET = 'ml-vertex'
const CONFIG = `gs://${BUCKET}/proj/ml.yaml`
const TUNE_CONFIG = `gs://${BUCKET}/proj/tune.yaml`
const PARENT = 'projects/ml-test-project/locations/us-central1'
const TUNE = {
  metric: 'valAccuracy',
  maxTrials: 3,
  parallelTrials: 2,
  parameters: [
    {name: 'train.learningRate', type: 'double', min: 0.0001, max: 0.01, scale: 'log'},
    {name: 'train.batchSize', type: 'discrete', values: [32, 64, 128]},
  ],
}

let cloud: GoogleCloudStandIns
let gcs: GcsServer
let vertex: VertexServer
let dir: string
let env: NodeJS.ProcessEnv

before(async () => {
  cloud = await startGoogleCloud('ml-cloud-vertex-', [BUCKET])
  ;({gcs, vertex, dir, env} = cloud)
  await uploadMnist(gcs, BUCKET, 'proj/images/train', 'train', 200)
  await uploadMnist(gcs, BUCKET, 'proj/images/test', 'test', 40)
  gcs.put(BUCKET, 'proj/ml.yaml', gsConfig(BUCKET, 'proj'))
  gcs.put(BUCKET, 'proj/tune.yaml', gsConfig(BUCKET, 'proj', {tune: TUNE}))
  // The dataset the jobs train on, ingested in-process into the stand-in.
  configureGcs({endpoint: gcs.url, auth: 'none', maxRetries: 1, maxRetryDelayMs: 1})
  const loaded = await loadConfig(CONFIG)
  await runIngest({config: loaded.config, baseDir: loaded.baseDir})
})
after(() => cloud.close())

type Spec = {
  workerPoolSpecs: Array<{
    machineSpec: Record<string, unknown>
    replicaCount: string | number
    containerSpec: {imageUri: string; args: string[]; env: Array<{name: string; value: string}>}
  }>
  baseOutputDirectory: {outputUriPrefix: string}
}

const specOf = (job: JobResource) => (job.jobSpec ?? job.trialJobSpec) as Spec

/**
 * Runs what a job's container runs (its args, after the image's `node bin/run.cjs` entrypoint) with the
 * environment Vertex AI gives a job with a base output directory, plus a trial's extras.
 */
async function runContainer(job: JobResource, extra: {args?: string[]; env?: NodeJS.ProcessEnv; outputPrefix?: string} = {}) {
  const spec = specOf(job)
  const container = spec.workerPoolSpecs[0]!.containerSpec
  const out = extra.outputPrefix ?? spec.baseOutputDirectory.outputUriPrefix
  const jobEnv = Object.fromEntries(container.env.map((e) => [e.name, e.value]))
  const result = await runCli([...container.args, ...(extra.args ?? [])], {
    cwd: dir,
    env: {...env, ...jobEnv, AIP_MODEL_DIR: `${out}model/`, AIP_CHECKPOINT_DIR: `${out}checkpoints/`, AIP_TENSORBOARD_LOG_DIR: `${out}logs/`, ...extra.env},
  })
  assert.equal(result.code, 0, result.stderr)
  return JSON.parse(result.stdout) as {runId: string; runDir: string; valAccuracy: number}
}

describe('ml train --target vertex', () => {
  it('uploads the config, submits a CustomJob, follows it to success and reports the run the job wrote', async () => {
    const cli = startCli(['train', '--config', CONFIG, '--target', 'vertex', '--json'], {env, cwd: dir})
    const name = await vertex.waitForJob()
    assert.match(name, new RegExp(`^${PARENT}/customJobs/\\d+$`))
    const job = vertex.job(name)
    const spec = specOf(job)
    const pool = spec.workerPoolSpecs[0]!
    const {AcceleratorType} = aiplatform.protos.google.cloud.aiplatform.v1
    assert.equal(pool.machineSpec.machineType, 'g2-standard-8')
    // The REST transport may send the enum by number; both are valid proto3 JSON.
    assert.ok([AcceleratorType.NVIDIA_L4, 'NVIDIA_L4'].includes(pool.machineSpec.acceleratorType as number), String(pool.machineSpec.acceleratorType))
    assert.equal(pool.machineSpec.acceleratorCount, 2)
    assert.equal(String(pool.replicaCount), '1')
    assert.equal(pool.containerSpec.imageUri, 'us-docker.pkg.dev/ml-test-project/ml/ml:test')
    const out = spec.baseOutputDirectory.outputUriPrefix
    assert.match(out, new RegExp(`^gs://${BUCKET}/proj/vertex/digits-\\d{8}-\\d{6}-[0-9a-f]{4}/$`))
    assert.deepEqual(pool.containerSpec.args, ['train', '--config', `${out}config.yaml`, '--target', 'local', '--devices', 'auto', '--json'])
    assert.equal(job.displayName, out.split('/').at(-2))
    const uploaded = parse(gcs.get(BUCKET, `${out.slice(`gs://${BUCKET}/`.length)}config.yaml`)!.data.toString())
    assert.equal(uploaded.train.target, 'local', 'the job never submits another job')
    assert.equal(uploaded.data.store, `gs://${BUCKET}/proj/dataset`)

    vertex.advance(name, 'JOB_STATE_RUNNING')
    await vertex.waitForPoll(name, 'JOB_STATE_RUNNING')
    const run = await runContainer(job)
    assert.ok(run.runDir.startsWith(`${out}runs/`), `${run.runDir} is under the job's output prefix`)
    const info = JSON.parse(gcs.get(BUCKET, `${run.runDir.slice(`gs://${BUCKET}/`.length)}/run.json`)!.data.toString())
    assert.equal(info.workers, await resolveDevices('auto'), '--devices auto: one worker per GPU, else per core')
    assert.ok(gcs.get(BUCKET, `${out.slice(`gs://${BUCKET}/`.length)}model/model.json`), 'the model was copied to AIP_MODEL_DIR')
    vertex.advance(name, 'JOB_STATE_SUCCEEDED')

    const result = await cli.done
    assert.equal(result.code, 0, result.stderr)
    const json = JSON.parse(result.stdout)
    assert.equal(json.job, name)
    assert.equal(json.state, 'JOB_STATE_SUCCEEDED')
    assert.equal(json.run.runId, run.runId)
    assert.equal(json.run.status, 'completed')
    assert.equal(typeof json.run.final.valAccuracy, 'number')
    assert.equal(result.stderr, '', 'nothing but JSON under --json')
  })

  it('shows a failed job\'s error and exits 5', async () => {
    const cli = startCli(['train', '--config', CONFIG, '--target', 'vertex'], {env, cwd: dir})
    const name = await vertex.waitForJob()
    await vertex.waitForPoll(name, 'JOB_STATE_PENDING')
    vertex.advance(name, 'JOB_STATE_RUNNING')
    await vertex.waitForPoll(name, 'JOB_STATE_RUNNING')
    vertex.advance(name, 'JOB_STATE_FAILED', {error: {code: 13, message: 'The replica workerpool0-0 exited with a non-zero status of 1.'}})
    const result = await cli.done
    assert.equal(result.code, 5, result.stderr)
    // oclif wraps the error message over several "›" lines.
    const stderr = result.stderr.replace(/\s*\n\s*›\s*/g, ' ')
    assert.match(stderr, new RegExp(`${name}: JOB_STATE_PENDING`), 'states are followed on stderr')
    assert.match(stderr, new RegExp(`${name}: JOB_STATE_RUNNING`))
    assert.match(stderr, /failed: The replica workerpool0-0 exited with a non-zero status of 1\./)
    assert.match(stderr, /gcloud ai custom-jobs stream-logs/)
  })

  it('Ctrl-C off a terminal cancels the job and says so (exit 130)', async () => {
    const cli = startCli(['train', '--config', CONFIG, '--target', 'vertex', '--json'], {env, cwd: dir})
    const name = await vertex.waitForJob()
    await vertex.waitForPoll(name, 'JOB_STATE_PENDING')
    cli.child.kill('SIGINT')
    const result = await cli.done
    assert.equal(result.code, 130, result.stderr)
    const json = JSON.parse(result.stdout)
    assert.equal(json.error.code, 'INTERRUPTED')
    assert.match(json.error.message, /cancelled/)
    assert.ok(vertex.requests.some((r) => r.method === 'POST' && r.path === `/${name}:cancel`))
    assert.equal(vertex.job(name).state, 'JOB_STATE_CANCELLED')
  })

  it('--detach prints the job name; `train status` and `train cancel` take it from there', async () => {
    const submitted = await runJson<{job: string; detached: boolean; state: string}>(['train', '--config', CONFIG, '--target', 'vertex', '--detach'], {env, cwd: dir})
    assert.equal(submitted.code, 0, submitted.stderr)
    assert.equal(submitted.json.detached, true)
    const name = submitted.json.job
    assert.equal(vertex.job(name).state, 'JOB_STATE_PENDING')
    // A bare id is looked up in train.vertex's project and region.
    const status = await runJson<{name: string; state: string; outputDir: string}>(['train', 'status', name.split('/').at(-1)!, '--config', CONFIG], {env, cwd: dir})
    assert.equal(status.code, 0, status.stderr)
    assert.equal(status.json.name, name)
    assert.equal(status.json.state, 'JOB_STATE_PENDING')
    assert.match(status.json.outputDir, new RegExp(`^gs://${BUCKET}/proj/vertex/`))

    // A full name needs no config (there is none in cwd).
    const cancelled = await runJson<{state: string}>(['train', 'cancel', name], {env, cwd: dir})
    assert.equal(cancelled.code, 0, cancelled.stderr)
    assert.equal(cancelled.json.state, 'JOB_STATE_CANCELLED')
    const again = await runJson<{error: {code: string}}>(['train', 'cancel', name], {env, cwd: dir})
    assert.equal(again.code, 2)
    assert.equal(again.json.error.code, 'VERTEX_JOB_ENDED')
  })

  it('without credentials fails fast with what to set (exit 5), before uploading or calling anything', async () => {
    const gcsBefore = gcs.requests.length
    const {ML_VERTEX_ENDPOINT: _, ...production} = env
    const requests = vertex.requests.length
    // The config comes from a local file here, so that Cloud Storage is not touched at all.
    const local = path.join(dir, 'local.yaml')
    const {writeFile} = await import('node:fs/promises')
    await writeFile(local, gsConfig(BUCKET, 'proj'))
    const {code, json} = await runJson<{error: {code: string; suggestions: string[]}}>(['train', '--config', local, '--target', 'vertex'], {env: production, cwd: dir})
    assert.equal(code, 5)
    assert.equal(json.error.code, 'VERTEX_AUTH')
    assert.match(json.error.suggestions.join(' '), /gcloud auth application-default login/)
    assert.equal(vertex.requests.length, requests)
    assert.equal(gcs.requests.length, gcsBefore, 'nothing was uploaded')
  })
})

describe('ml tune', () => {
  it('submits a tuning job; a trial takes its values and reports its metric; the command ends with the trials', async () => {
    const cli = startCli(['tune', '--config', TUNE_CONFIG, '--json'], {env, cwd: dir})
    const name = await vertex.waitForJob('hyperparameterTuningJobs')
    const job = vertex.job(name)
    const study = job.studySpec as {metrics: Array<{metricId: string; goal: unknown}>; parameters: Array<Record<string, any>>}
    assert.equal(study.metrics[0]!.metricId, 'valAccuracy')
    assert.ok([1, 'MAXIMIZE'].includes(study.metrics[0]!.goal as number))
    assert.equal(study.parameters[0]!.parameterId, 'train_learningRate')
    assert.deepEqual(study.parameters[0]!.doubleValueSpec, {minValue: 0.0001, maxValue: 0.01})
    assert.deepEqual(study.parameters[1]!.discreteValueSpec, {values: [32, 64, 128]})
    assert.equal(job.maxTrialCount, 3)
    assert.equal(job.parallelTrialCount, 2)
    const container = specOf(job).workerPoolSpecs[0]!.containerSpec
    const jobEnv = Object.fromEntries(container.env.map((e) => [e.name, e.value]))
    assert.equal(jobEnv.ML_HYPERTUNE, 'valAccuracy')
    assert.deepEqual(JSON.parse(jobEnv.ML_TUNE_PARAMS!), {
      train_learningRate: {key: 'train.learningRate', type: 'double'},
      train_batchSize: {key: 'train.batchSize', type: 'discrete'},
    })

    // Trial 1, as Vertex AI runs it: the values appended as arguments, its own output prefix.
    vertex.advance(name, 'JOB_STATE_RUNNING')
    const trialOut = `${specOf(job).baseOutputDirectory.outputUriPrefix}1/`
    const metricFile = path.join(dir, 'hypertune', 'output.metrics')
    const run = await runContainer(job, {
      args: ['--train_learningRate=0.003', '--train_batchSize', '64'],
      env: {CLOUD_ML_TRIAL_ID: '1', CLOUD_ML_HP_METRIC_FILE: metricFile},
      outputPrefix: trialOut,
    })
    assert.ok(run.runDir.startsWith(`${trialOut}runs/`), run.runDir)
    configureGcs({endpoint: gcs.url, auth: 'none'})
    const runConfig = JSON.parse(gcs.get(BUCKET, `${run.runDir.slice(`gs://${BUCKET}/`.length)}/config.json`)!.data.toString())
    assert.equal(runConfig.train.learningRate, 0.003)
    assert.equal(runConfig.train.batchSize, 64)
    const reports = readHypertuneFile(metricFile)
    assert.equal(reports.length, 1, 'one report per epoch')
    assert.deepEqual(Object.keys(reports[0]!), ['checkpoint_path', 'global_step', 'timestamp', 'trial', 'valAccuracy'])
    assert.equal(reports[0]!.trial, '1')
    assert.equal(reports[0]!.global_step, '1')
    const reported = Number(reports[0]!.valAccuracy)
    assert.ok(Math.abs(reported - run.valAccuracy) < 1e-9, `${reported} vs ${run.valAccuracy}`)

    vertex.setTrials(name, [
      {id: '1', state: 'SUCCEEDED', parameters: [{parameterId: 'train_learningRate', value: 0.003}, {parameterId: 'train_batchSize', value: 64}], finalMeasurement: {stepCount: '1', metrics: [{metricId: 'valAccuracy', value: reported}]}},
      {id: '2', state: 'SUCCEEDED', parameters: [{parameterId: 'train_learningRate', value: 0.0001}, {parameterId: 'train_batchSize', value: 128}], finalMeasurement: {stepCount: '1', metrics: [{metricId: 'valAccuracy', value: reported - 0.05}]}},
      {id: '3', state: 'INFEASIBLE', parameters: [{parameterId: 'train_learningRate', value: 0.01}, {parameterId: 'train_batchSize', value: 32}]},
    ])
    vertex.advance(name, 'JOB_STATE_SUCCEEDED')
    const result = await cli.done
    assert.equal(result.code, 0, result.stderr)
    const json = JSON.parse(result.stdout)
    assert.equal(json.state, 'JOB_STATE_SUCCEEDED')
    assert.equal(json.trials.length, 3)
    assert.deepEqual(json.best.parameters, {'train.learningRate': 0.003, 'train.batchSize': 64})
    assert.equal(json.best.id, '1')
    assert.equal(json.trials[2].state, 'INFEASIBLE')
  })

  it('prints the trials as a table, the best marked', () => {
    const tune = {metric: 'valLoss', goal: undefined, maxTrials: 2, parallelTrials: 1, algorithm: 'default', target: 'vertex', eta: 3, parameters: [{name: 'train.learningRate', type: 'double', min: 0.001, max: 0.1}]} as const
    const rows = trialRows(
      [
        {id: '1', state: 'SUCCEEDED', parameters: [{parameterId: 'train_learningRate', value: {numberValue: 0.01, kind: 'numberValue'}}], finalMeasurement: {metrics: [{metricId: 'valLoss', value: 0.3}]}},
        {id: '2', state: 'SUCCEEDED', parameters: [{parameterId: 'train_learningRate', value: {numberValue: 0.002, kind: 'numberValue'}}], finalMeasurement: {metrics: [{metricId: 'valLoss', value: 0.2}]}},
      ],
      {...tune, parameters: [...tune.parameters]},
    )
    assert.equal(rows.find((r) => r.best)?.id, '2', 'valLoss is minimized')
    assert.equal(
      trialTable(rows, {...tune, parameters: [...tune.parameters]}),
      ['trial  state      train.learningRate  valLoss', '-----  ---------  ------------------  -------', '1      SUCCEEDED  0.01                0.3000', '2 *    SUCCEEDED  0.002               0.2000'].join('\n'),
    )
  })
})

describe('the job API client (in-process)', () => {
  it('waits out 503s while following a job, and names a job that does not exist', async () => {
    process.env.ML_VERTEX_ENDPOINT = vertex.url
    const jobs = await jobServiceClient('us-central1')
    try {
      const [job] = await jobs.createCustomJob({
        parent: PARENT,
        customJob: {displayName: 'direct', jobSpec: {workerPoolSpecs: [{machineSpec: {machineType: 'n1-standard-4'}, replicaCount: 1, containerSpec: {imageUri: 'x'}}]}},
      })
      vertex.advance(job.name!, 'JOB_STATE_SUCCEEDED')
      vertex.failNext(2, 503)
      const states: string[] = []
      const view = await followJob(async () => (await jobs.getCustomJob({name: job.name!}))[0], {pollMs: 5, onState: (v) => states.push(v.state)})
      assert.equal(view.state, 'JOB_STATE_SUCCEEDED')
      assert.deepEqual(states, ['JOB_STATE_SUCCEEDED'])
      assert.equal(vertex.requests.filter((r) => r.path === `/${job.name}` && r.status === 503).length, 2)
      await assert.rejects(getJob(`${PARENT}/customJobs/1`, jobs), (error: unknown) => error instanceof UserError && error.code === 'VERTEX_NOT_FOUND' && error.exitCode === 2)
    } finally {
      await jobs.close()
      delete process.env.ML_VERTEX_ENDPOINT
    }
  })
})
