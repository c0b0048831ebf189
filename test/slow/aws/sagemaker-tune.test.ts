// SageMaker hyperparameter tuning through the CLI against moto: the HyperParameterTuningJob `ml tune`
// submits (strategy, ranges, objective, metric definition, the trials' training job definition), trial
// containers run as SageMaker runs them (hyperparameters.json with the tuned values beside ml-config)
// printing the metric lines the job's regular expression reads, and the followed job's trials table.
// moto stores a tuning job as Completed at once and implements neither its trials list nor
// StopHyperParameterTuningJob, so a proxy in front of moto answers those as SageMaker does; the same
// proxy keeps jobs running to exercise Ctrl-C, which stops a followed job when no terminal can be asked.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {DescribeHyperParameterTuningJobCommand, type SageMakerClient} from '@aws-sdk/client-sagemaker'
import {parse, stringify} from 'yaml'
import {readBytes} from '../../../src/lib/storage/index.js'
import {runJson, startCli} from '../../support/cli.js'
import {motoWorkspace, s3Config, type MotoWorkspace} from '../../support/aws-fixtures.js'
import type {MotoServer} from '../../support/moto-server.js'
import {runSageMakerContainer, sagemakerProject, sagemakerProxy, type SageMakerProject} from '../../support/sagemaker-fixtures.js'

const BUCKET = 'ml-sm-tune'
const CONFIG = `s3://${BUCKET}/proj/ml.yaml`
const SAGEMAKER = {
  roleArn: 'arn:aws:iam::123456789012:role/ml-training',
  image: '123456789012.dkr.ecr.us-east-1.amazonaws.com/ml:test',
  instanceType: 'ml.c5.xlarge',
  outputPath: `s3://${BUCKET}/proj/sagemaker`,
}
const TUNE = {
  metric: 'valAccuracy',
  maxTrials: 4,
  parallelTrials: 2,
  parameters: [
    {name: 'train.learningRate', type: 'double', min: 0.0005, max: 0.05, scale: 'log'},
    {name: 'train.batchSize', type: 'discrete', values: [16, 32]},
  ],
}

describe('ml tune --target sagemaker', () => {
  let ws: MotoWorkspace
  let project: SageMakerProject
  let moto: MotoServer
  let dir: string
  let env: NodeJS.ProcessEnv
  let sagemaker: SageMakerClient

  before(async () => {
    ws = await motoWorkspace('ml-sagemaker-tune-')
    ;({moto, dir} = ws)
    env = {...ws.env, ML_SAGEMAKER_POLL_MS: '20'}
    const config = parse(s3Config(BUCKET, 'proj', {sagemaker: SAGEMAKER, train: {epochs: 2}})) as Record<string, unknown>
    project = await sagemakerProject(ws, BUCKET, stringify({...config, tune: TUNE}), env)
    assert.equal(project.config, CONFIG)
    sagemaker = project.sagemaker
  })
  after(async () => {
    project?.close()
    await ws?.close()
  })

  /** Runs one trial's container as SageMaker does: `<image> train`, hyperparameters.json = static + tuned values. */
  async function runTrial(tuningJob: string, trial: string, tuned: Record<string, string>) {
    const described = await sagemaker.send(new DescribeHyperParameterTuningJobCommand({HyperParameterTuningJobName: tuningJob}))
    const definition = described.TrainingJobDefinition!
    const result = await runSageMakerContainer({
      job: trial,
      root: path.join(dir, `opt-ml-${trial}`),
      hyperparameters: {...definition.StaticHyperParameters, ...tuned},
      channelUri: definition.InputDataConfig![0]!.DataSource!.S3DataSource!.S3Uri!,
      env,
      args: ['--json'],
    })
    // What SageMaker does with the log: every match of the metric definition's expression, in order.
    const metric = definition.AlgorithmSpecification!.MetricDefinitions![0]!
    const values = [...result.stderr.matchAll(new RegExp(metric.Regex!, 'g'))].map((m) => Number(m[1]))
    return {...result, json: JSON.parse(result.stdout) as {runDir: string}, values, metricName: metric.Name!}
  }

  it('submits a tuning job whose trials train with their values and print the metric its definition reads', async () => {
    const submitted = await runJson<{job: string; detached: boolean; outputDir: string; configUri: string}>(['tune', '--config', CONFIG, '--target', 'sagemaker', '--detach'], {env, cwd: dir})
    assert.equal(submitted.code, 0, submitted.stderr)
    assert.equal(submitted.json.detached, true)
    const job = submitted.json.job
    assert.ok(job.length <= 32 && /^digits-tune-[0-9a-f]{6}$/.test(job), job)
    const described = await sagemaker.send(new DescribeHyperParameterTuningJobCommand({HyperParameterTuningJobName: job}))
    const config = described.HyperParameterTuningJobConfig!
    assert.equal(config.Strategy, 'Bayesian')
    assert.deepEqual(config.HyperParameterTuningJobObjective, {Type: 'Maximize', MetricName: 'valAccuracy'})
    assert.deepEqual(config.ResourceLimits, {MaxNumberOfTrainingJobs: 4, MaxParallelTrainingJobs: 2})
    assert.deepEqual(config.ParameterRanges?.ContinuousParameterRanges, [{Name: 'train_learningRate', MinValue: '0.0005', MaxValue: '0.05', ScalingType: 'Logarithmic'}])
    assert.deepEqual(config.ParameterRanges?.CategoricalParameterRanges, [{Name: 'train_batchSize', Values: ['16', '32']}])
    const definition = described.TrainingJobDefinition!
    assert.equal(definition.AlgorithmSpecification?.TrainingImage, SAGEMAKER.image)
    assert.equal(definition.RoleArn, SAGEMAKER.roleArn)
    assert.equal(definition.ResourceConfig?.InstanceType, SAGEMAKER.instanceType)
    assert.equal(definition.InputDataConfig?.[0]?.DataSource?.S3DataSource?.S3Uri, `s3://${BUCKET}/proj/dataset/`)
    assert.equal(definition.StaticHyperParameters?.['ml-config'], submitted.json.configUri)
    assert.equal(submitted.json.configUri, `${SAGEMAKER.outputPath}/${job}/config.yaml`)

    const slow = await runTrial(job, `${job}-001-aaaa1111`, {train_learningRate: '0.0005', train_batchSize: '"32"'})
    const fast = await runTrial(job, `${job}-002-bbbb2222`, {train_learningRate: '0.02', train_batchSize: '16'})
    for (const trial of [slow, fast]) {
      assert.equal(trial.code, 0, trial.stderr)
      assert.equal(trial.metricName, 'valAccuracy')
      // One metric line per epoch, each a validation accuracy.
      assert.equal(trial.values.length, 2, trial.stderr)
      for (const v of trial.values) assert.ok(v >= 0 && v <= 1, String(v))
    }
    // Each trial trained with its own values (the run records the config it used).
    const used = async (runDir: string) => JSON.parse((await readBytes(`${runDir}/config.json`)).toString()) as {train: {learningRate: number; batchSize: number}}
    assert.deepEqual([(await used(slow.json.runDir)).train.learningRate, (await used(slow.json.runDir)).train.batchSize], [0.0005, 32])
    assert.deepEqual([(await used(fast.json.runDir)).train.learningRate, (await used(fast.json.runDir)).train.batchSize], [0.02, 16])

    // Followed to the end: the job's trials (as SageMaker lists them, with the last metric each printed) in a table, best marked.
    const proxy = await sagemakerProxy(moto.url)
    try {
      let reads = 0
      proxy.answers.set('DescribeHyperParameterTuningJob', (j) => ({...j, HyperParameterTuningJobStatus: ++reads < 3 ? 'InProgress' : 'Completed', BestTrainingJob: undefined}))
      const summary = (name: string, tuned: Record<string, string>, value: number) => ({
        TrainingJobName: name,
        TrainingJobArn: `arn:aws:sagemaker:us-east-1:123456789012:training-job/${name}`,
        CreationTime: 1,
        TrainingJobStatus: 'Completed',
        TunedHyperParameters: tuned,
        FinalHyperParameterTuningJobObjectiveMetric: {MetricName: 'valAccuracy', Value: value},
      })
      proxy.answers.set('ListTrainingJobsForHyperParameterTuningJob', () => ({
        TrainingJobSummaries: [
          summary(`${job}-002-bbbb2222`, {train_learningRate: '0.02', train_batchSize: '"16"'}, fast.values.at(-1)!),
          summary(`${job}-001-aaaa1111`, {train_learningRate: '0.0005', train_batchSize: '"32"'}, slow.values.at(-1)!),
        ],
      }))
      const followed = await runJson<{state: string; trials: Array<{id: string; state: string; parameters: Record<string, number>; metric: number; best?: boolean}>; best: {id: string}}>(
        ['tune', '--config', CONFIG, '--target', 'sagemaker'],
        {env: {...env, ML_SAGEMAKER_ENDPOINT: proxy.url}, cwd: dir},
      )
      assert.equal(followed.code, 0, followed.stderr)
      assert.equal(followed.json.state, 'Completed')
      assert.deepEqual(
        followed.json.trials.map((t) => [t.id.slice(-12), t.state, t.parameters['train.learningRate'], t.parameters['train.batchSize'], t.metric]),
        [
          ['001-aaaa1111', 'SUCCEEDED', 0.0005, 32, slow.values.at(-1)],
          ['002-bbbb2222', 'SUCCEEDED', 0.02, 16, fast.values.at(-1)],
        ],
      )
      const better = fast.values.at(-1)! >= slow.values.at(-1)! ? `${job}-002-bbbb2222` : `${job}-001-aaaa1111`
      assert.equal(followed.json.trials.filter((t) => t.best).length, 1)
      assert.equal(followed.json.best.id.slice(-12), better.slice(-12))
    } finally {
      await proxy.close()
    }
  })

  it('a failed tuning job exits 5 with its reason; ml train status and cancel know tuning jobs', async () => {
    const proxy = await sagemakerProxy(moto.url)
    try {
      proxy.answers.set('DescribeHyperParameterTuningJob', (j) => ({...j, HyperParameterTuningJobStatus: 'Failed', FailureReason: 'All training jobs failed: AlgorithmError'}))
      proxy.answers.set('ListTrainingJobsForHyperParameterTuningJob', () => ({TrainingJobSummaries: []}))
      const failed = await runJson<{error: {code: string; message: string}}>(['tune', '--config', CONFIG, '--target', 'sagemaker'], {env: {...env, ML_SAGEMAKER_ENDPOINT: proxy.url}, cwd: dir})
      assert.equal(failed.code, 5, failed.stderr)
      assert.equal(failed.json.error.code, 'SAGEMAKER_JOB_FAILED')
      assert.match(failed.json.error.message, /All training jobs failed: AlgorithmError/)
    } finally {
      await proxy.close()
    }
    const submitted = await runJson<{job: string}>(['tune', '--config', CONFIG, '--target', 'sagemaker', '--detach'], {env, cwd: dir})
    assert.equal(submitted.code, 0, submitted.stderr)
    const status = await runJson<{kind: string; state: string}>(['train', 'status', submitted.json.job], {env, cwd: dir})
    assert.equal(status.code, 0, status.stderr)
    assert.equal(status.json.kind, 'sagemaker-tuning-job')
    assert.equal(status.json.state, 'Completed')
    // moto's tuning jobs are Completed at once: cancelling one is refused as for any ended job (exit 2).
    const ended = await runJson<{error: {code: string}}>(['train', 'cancel', submitted.json.job], {env, cwd: dir})
    assert.equal(ended.code, 2, ended.stderr)
    assert.equal(ended.json.error.code, 'SAGEMAKER_JOB_ENDED')
  })

  for (const kind of ['tuning job', 'training job'] as const) {
    it(`Ctrl-C while following a ${kind} with no terminal to ask stops the job and exits 130`, async () => {
      const proxy = await sagemakerProxy(moto.url)
      try {
        const describe = kind === 'tuning job' ? 'DescribeHyperParameterTuningJob' : 'DescribeTrainingJob'
        const stop = kind === 'tuning job' ? 'StopHyperParameterTuningJob' : 'StopTrainingJob'
        const status = kind === 'tuning job' ? 'HyperParameterTuningJobStatus' : 'TrainingJobStatus'
        proxy.answers.set(describe, (j) => ({...j, [status]: proxy.seen.includes(stop) ? 'Stopping' : 'InProgress'}))
        proxy.answers.set(stop, () => ({}))
        proxy.answers.set('ListTrainingJobsForHyperParameterTuningJob', () => ({TrainingJobSummaries: []}))
        const args = kind === 'tuning job' ? ['tune', '--config', CONFIG, '--target', 'sagemaker', '--json'] : ['train', '--config', CONFIG, '--target', 'sagemaker', '--json']
        const cli = startCli(args, {env: {...env, ML_SAGEMAKER_ENDPOINT: proxy.url}, cwd: dir})
        await proxy.waitFor(describe)
        cli.child.kill('SIGINT')
        const result = await cli.done
        assert.equal(result.code, 130, result.stderr)
        assert.ok(proxy.seen.includes(stop), proxy.seen.join(' '))
        const json = JSON.parse(result.stdout) as {error: {code: string; message: string}}
        assert.equal(json.error.code, 'INTERRUPTED')
        assert.match(json.error.message, new RegExp(`SageMaker ${kind} .* was stopped \\(Stopping\\)`))
      } finally {
        await proxy.close()
      }
    })
  }
})
