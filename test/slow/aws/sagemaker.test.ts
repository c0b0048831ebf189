// SageMaker training through the CLI against moto's SageMaker and S3: a job submitted with the dataset
// as its input channel, its container command run as SageMaker runs it (`<image> train` with the
// channel copied to /opt/ml/input/data/training and hyperparameters.json), the model left in
// /opt/ml/model, `ml train status`; and a failed job's reason shown. moto completes every training job
// at once and implements no failure or StopTrainingJob, so those answers come from a proxy in front of
// moto that rewrites them as SageMaker gives them.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import {readFile, readdir} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {DescribeTrainingJobCommand, type SageMakerClient} from '@aws-sdk/client-sagemaker'
import {runJson} from '../../support/cli.js'
import {motoWorkspace, s3Config, type MotoWorkspace} from '../../support/aws-fixtures.js'
import type {MotoServer} from '../../support/moto-server.js'
import {runSageMakerContainer, sagemakerProject, sagemakerProxy, type SageMakerProject} from '../../support/sagemaker-fixtures.js'

const BUCKET = 'ml-sm'
const CONFIG = `s3://${BUCKET}/proj/ml.yaml`
const SAGEMAKER = {
  roleArn: 'arn:aws:iam::123456789012:role/ml-training',
  image: '123456789012.dkr.ecr.us-east-1.amazonaws.com/ml:test',
  instanceType: 'ml.g5.xlarge',
  outputPath: `s3://${BUCKET}/proj/sagemaker`,
}

describe('ml train --target sagemaker', () => {
  let ws: MotoWorkspace
  let project: SageMakerProject
  let moto: MotoServer
  let dir: string
  let env: NodeJS.ProcessEnv
  let sagemaker: SageMakerClient

  before(async () => {
    ws = await motoWorkspace('ml-sagemaker-')
    ;({moto, dir, env} = ws)
    project = await sagemakerProject(ws, BUCKET, s3Config(BUCKET, 'proj', {sagemaker: SAGEMAKER}))
    assert.equal(project.config, CONFIG)
    sagemaker = project.sagemaker
  })
  after(async () => {
    project?.close()
    await ws?.close()
  })

  /** Runs the job's container command as SageMaker does: `<image> train` with /opt/ml laid out under `root`. */
  async function runContainer(job: string, root: string, options: {emptyChannel?: boolean} = {}) {
    const described = await sagemaker.send(new DescribeTrainingJobCommand({TrainingJobName: job}))
    const channel = described.InputDataConfig!.find((c) => c.ChannelName === 'training')!
    return runSageMakerContainer({
      job,
      root,
      hyperparameters: described.HyperParameters,
      channelUri: options.emptyChannel ? undefined : channel.DataSource!.S3DataSource!.S3Uri!,
      env,
    })
  }

  it('submits a job with the dataset as its channel; its container trains on it and leaves the model in /opt/ml/model', async () => {
    const submitted = await runJson<{job: string; detached: boolean; outputDir: string; configUri: string}>(['train', '--config', CONFIG, '--target', 'sagemaker', '--detach'], {env, cwd: dir})
    assert.equal(submitted.code, 0, submitted.stderr)
    assert.equal(submitted.json.detached, true)
    const job = submitted.json.job
    assert.match(job, /^digits-\d{8}-\d{6}-[0-9a-f]{4}$/)
    const described = await sagemaker.send(new DescribeTrainingJobCommand({TrainingJobName: job}))
    assert.equal(described.AlgorithmSpecification?.TrainingImage, SAGEMAKER.image)
    assert.equal(described.RoleArn, SAGEMAKER.roleArn)
    assert.equal(described.ResourceConfig?.InstanceType, 'ml.g5.xlarge')
    assert.equal(described.InputDataConfig?.[0]?.DataSource?.S3DataSource?.S3Uri, `s3://${BUCKET}/proj/dataset/`)
    assert.equal(described.OutputDataConfig?.S3OutputPath, `${SAGEMAKER.outputPath}/${job}/output`)
    assert.equal(described.HyperParameters?.['ml-config'], `${SAGEMAKER.outputPath}/${job}/config.yaml`)

    const root = path.join(dir, 'opt-ml')
    const container = await runContainer(job, root)
    assert.equal(container.code, 0, container.stderr)
    assert.deepEqual((await readdir(path.join(root, 'model'))).sort(), ['labels.json', 'model.json', 'preprocessing.json', 'weights.bin'])
    const status = await runJson<Record<string, any>>(['train', 'status', job], {env, cwd: dir})
    assert.equal(status.code, 0, status.stderr)
    assert.equal(status.json.state, 'Completed')
    assert.equal(status.json.outputDir, `${SAGEMAKER.outputPath}/${job}`)
    assert.equal(status.json.modelArtifacts, `${SAGEMAKER.outputPath}/${job}/output/${job}/output/model.tar.gz`)
    assert.ok(status.json.run.runDir.startsWith(`${SAGEMAKER.outputPath}/${job}/runs/digits-`), status.json.run.runDir)
    assert.equal(status.json.run.status, 'completed')
  })

  it('follows a job to completion', async () => {
    const followed = await runJson<{job: string; detached: boolean; state: string}>(['train', '--config', CONFIG, '--target', 'sagemaker'], {env, cwd: dir})
    assert.equal(followed.code, 0, followed.stderr)
    assert.equal(followed.json.detached, false)
    assert.equal(followed.json.state, 'Completed')
  })

  it('a container that fails writes SageMaker\'s failure file, and the followed job\'s reason is shown (exit 5)', async () => {
    const submitted = await runJson<{job: string}>(['train', '--config', CONFIG, '--target', 'sagemaker', '--detach'], {env, cwd: dir})
    assert.equal(submitted.code, 0, submitted.stderr)
    const root = path.join(dir, 'opt-ml-failing')
    const container = await runContainer(submitted.json.job, root, {emptyChannel: true})
    assert.notEqual(container.code, 0)
    const reason = await readFile(path.join(root, 'output', 'failure'), 'utf8')
    assert.match(reason, /dataset|manifest/i, reason)

    const proxy = await sagemakerProxy(moto.url)
    try {
      proxy.answers.set('DescribeTrainingJob', (job) => ({...job, TrainingJobStatus: 'Failed', SecondaryStatus: 'Failed', FailureReason: `AlgorithmError: ${reason}`}))
      const followed = await runJson<{error: {code: string; message: string; suggestions: string[]}}>(['train', '--config', CONFIG, '--target', 'sagemaker'], {env: {...env, ML_SAGEMAKER_ENDPOINT: proxy.url}, cwd: dir})
      assert.equal(followed.code, 5, followed.stderr)
      assert.equal(followed.json.error.code, 'SAGEMAKER_JOB_FAILED')
      assert.ok(followed.json.error.message.includes(reason.slice(0, 40)), followed.json.error.message)
      assert.match(followed.json.error.suggestions.join(' '), /CloudWatch/)

      // ml train cancel: moto has no StopTrainingJob; the proxy answers it as SageMaker does.
      proxy.answers.set('DescribeTrainingJob', (job) => ({...job, TrainingJobStatus: proxy.seen.includes('StopTrainingJob') ? 'Stopping' : 'InProgress'}))
      proxy.answers.set('StopTrainingJob', () => ({}))
      const cancelled = await runJson<{state: string}>(['train', 'cancel', submitted.json.job], {env: {...env, ML_SAGEMAKER_ENDPOINT: proxy.url}, cwd: dir})
      assert.equal(cancelled.code, 0, cancelled.stderr)
      assert.equal(cancelled.json.state, 'Stopping')
      assert.ok(proxy.seen.includes('StopTrainingJob'))
    } finally {
      await proxy.close()
    }
  })
})
