// s3:// everywhere, through the real CLI against moto's S3: config, s3 source, dataset store, run
// directory and model repository, then `ml serve --repository s3://...`.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import path from 'node:path'
import {mkdir} from 'node:fs/promises'
import {after, before, describe, it} from 'node:test'
import {DescribeModelCommand, SageMakerClient} from '@aws-sdk/client-sagemaker'
import * as tar from 'tar'
import {CopyObjectCommand, GetObjectCommand, ListObjectsV2Command} from '@aws-sdk/client-s3'
import {mnistPng, readMnist} from '../../../src/lib/data/mnist.js'
import {configureS3} from '../../../src/lib/storage/s3.js'
import {downloadDir} from '../../../src/lib/storage/index.js'
import {runJson} from '../../support/cli.js'
import {awsEnv, createBuckets, putObject, s3Client, s3Config, uploadMnistS3, useTestCredentials} from '../../support/aws-fixtures.js'
import {guardNetwork} from '../../support/cloud-fixtures.js'
import {tempDir} from '../../support/fixtures.js'
import {MotoServer} from '../../support/moto-server.js'
import {startServe} from '../../support/serve-fixtures.js'
import {classifyDigits, ingestsIntoBucket, referenceTop, testDigits, trainsIntoBucket, type ProjectBucket} from '../../scenarios/project-on-bucket.js'

const BUCKET = 'ml-data'
const CONFIG = `s3://${BUCKET}/proj/ml.yaml`
const SAGEMAKER = {roleArn: 'arn:aws:iam::123456789012:role/ml', image: '123456789012.dkr.ecr.us-east-1.amazonaws.com/ml:test', outputPath: `s3://${BUCKET}/proj/sagemaker`}

describe('a project entirely on s3://', () => {
  let moto: MotoServer
  let dir: string
  let cleanup: () => Promise<void>
  let env: NodeJS.ProcessEnv
  let checkNetwork: () => Promise<void>
  const names = async (prefix: string) => {
    const client = s3Client(moto.url)
    const keys: string[] = []
    let token: string | undefined
    do {
      const page = await client.send(new ListObjectsV2Command({Bucket: BUCKET, Prefix: prefix, ...(token ? {ContinuationToken: token} : {})}))
      keys.push(...(page.Contents ?? []).map((o) => o.Key!))
      token = page.NextContinuationToken
    } while (token)
    return keys
  }
  const text = async (key: string) => (await (await s3Client(moto.url).send(new GetObjectCommand({Bucket: BUCKET, Key: key}))).Body!.transformToString())
  const bucket: ProjectBucket = {
    scheme: 's3',
    bucket: BUCKET,
    names,
    text,
    useFromHere: () => configureS3({endpoint: moto.url, forcePathStyle: true}),
  }

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-aws-pipeline-'))
    checkNetwork = guardNetwork(dir)
    useTestCredentials()
    moto = await MotoServer.start()
    env = awsEnv(moto, dir)
    await createBuckets(moto.url, BUCKET)
    await uploadMnistS3(moto.url, BUCKET, 'proj/images/train', 'train', 300)
    await uploadMnistS3(moto.url, BUCKET, 'proj/images/test', 'test', 60)
    await putObject(moto.url, BUCKET, 'proj/images/train/3/broken.png', 'not a png at all')
    await putObject(moto.url, BUCKET, 'proj/images/train/.DS_Store', 'hidden')
    await putObject(moto.url, BUCKET, 'proj/images/train/README.txt', 'no class folder')
    await putObject(moto.url, BUCKET, 'proj/ml.yaml', s3Config(BUCKET, 'proj', {sagemaker: SAGEMAKER}))
    configureS3({endpoint: moto.url, forcePathStyle: true})
  })
  after(async () => {
    configureS3(undefined)
    await moto.close()
    await checkNetwork()
    await cleanup()
  })

  it('ingests an s3 source into an s3:// store, with quarantine and dedupe', async () => {
    await ingestsIntoBucket(bucket, {env, cwd: dir})
  })

  it('trains with the run directory on s3://', async () => {
    await trainsIntoBucket(bucket, {env, cwd: dir})
  })

  it('exports to an s3:// model repository and serves from it, picking up a new version', async () => {
    const exported = await runJson<Record<string, any>>(['export', '--config', CONFIG], {env, cwd: dir})
    assert.equal(exported.code, 0, exported.stderr)
    assert.equal(exported.json.dir, `s3://${BUCKET}/proj/models/digits/1`)
    const versionKeys = await names('proj/models/digits/1/')
    assert.ok(versionKeys.includes('proj/models/digits/1/model.json') && versionKeys.includes('proj/models/digits/1/weights.bin'), versionKeys.join(', '))

    const server = await startServe(['--repository', `s3://${BUCKET}/proj/models`, '--model', 'digits', '--port', '0', '--instances', '1'], {env, cwd: dir})
    try {
      await server.waitForEvent((e) => e.event === 'model-loaded' && e.version === 1)
      const digits = await testDigits(8)
      const v1 = await classifyDigits(server.url, 1, digits)
      // The reference: the same version copied here and run in this process.
      const local = path.join(dir, 'digits-1')
      await downloadDir(`s3://${BUCKET}/proj/models/digits/1`, local)
      const {top} = await referenceTop(local, digits)
      assert.deepEqual(v1, top)
      // A new version appears in the bucket, copied server-side as a CI job would publish it.
      const client = s3Client(moto.url)
      for (const key of versionKeys) {
        await client.send(new CopyObjectCommand({Bucket: BUCKET, Key: key.replace('/digits/1/', '/digits/2/'), CopySource: `${BUCKET}/${key}`}))
      }
      await server.waitForEvent((e) => e.event === 'model-loaded' && e.version === 2)
      assert.deepEqual(await classifyDigits(server.url, 2, digits), v1, 'the same weights give the same answers')
    } finally {
      server.child.kill('SIGTERM')
      const result = await server.done
      assert.equal(result.code, 0, result.stderr)
    }
  })

  it('registers a version in SageMaker (ml export --to sagemaker) whose container answers /ping and /invocations', async () => {
    const exported = await runJson<Record<string, any>>(['export', '--config', CONFIG, '--to', 'sagemaker', '--version', '1'], {env, cwd: dir})
    assert.equal(exported.code, 0, exported.stderr)
    const {model, modelData} = exported.json.sagemaker as {model: string; modelData: string}
    assert.equal(modelData, `${SAGEMAKER.outputPath}/models/digits/1/model.tar.gz`)
    const sagemaker = new SageMakerClient({endpoint: moto.url, region: 'us-east-1', credentials: {accessKeyId: 'testing', secretAccessKey: 'testing'}})
    const described = await sagemaker.send(new DescribeModelCommand({ModelName: model}))
    sagemaker.destroy()
    assert.equal(described.PrimaryContainer?.Image, SAGEMAKER.image)
    assert.equal(described.PrimaryContainer?.ModelDataUrl, modelData)
    assert.equal(described.ExecutionRoleArn, SAGEMAKER.roleArn)
    // As SageMaker hosting does: model.tar.gz unpacked into /opt/ml/model, then `<image> serve` with the model's environment.
    const optMlModel = path.join(dir, 'opt-ml-model')
    await mkdir(optMlModel, {recursive: true})
    await downloadDir(`${SAGEMAKER.outputPath}/models/digits/1`, path.join(dir, 'sm-archive'))
    await tar.extract({file: path.join(dir, 'sm-archive', 'model.tar.gz'), cwd: optMlModel})
    const containerEnv = {...described.PrimaryContainer?.Environment, ML_REPOSITORY: optMlModel, ML_HOST: '127.0.0.1', ML_PORT: '0'}
    assert.equal(described.PrimaryContainer?.Environment?.ML_REPOSITORY, '/opt/ml/model')
    assert.equal(described.PrimaryContainer?.Environment?.ML_PORT, '8080')
    const server = await startServe(['--instances', '1'], {env: {...env, ...containerEnv}, cwd: optMlModel})
    try {
      await server.waitForEvent((e) => e.event === 'model-loaded')
      const ping = await fetch(`${server.url}/ping`)
      assert.equal(ping.status, 200)
      const sample = await readMnist('test', 0, 4)
      for (let i = 0; i < sample.count; i++) {
        const png = await mnistPng(sample, i)
        const invoked = await fetch(`${server.url}/invocations`, {method: 'POST', headers: {'Content-Type': 'image/png'}, body: png})
        assert.equal(invoked.status, 200, await invoked.clone().text())
        const classified = await fetch(`${server.url}/v1/models/digits:classify`, {method: 'POST', headers: {'Content-Type': 'image/png'}, body: png})
        assert.deepEqual(await invoked.json(), await classified.json(), '/invocations answers as :classify does')
      }
      const wrong = await fetch(`${server.url}/invocations`, {method: 'POST', headers: {'Content-Type': 'text/csv'}, body: '1,2,3'})
      assert.equal(wrong.status, 415)
    } finally {
      server.child.kill('SIGTERM')
      const result = await server.done
      assert.equal(result.code, 0, result.stderr)
    }
  })

  it('says what to set when AWS credentials are missing (exit 5)', async () => {
    const {code, json} = await runJson<{error: {code: string; suggestions: string[]}}>(['train', '--config', CONFIG], {
      env: {...env, AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_PROFILE: ''},
      cwd: dir,
    })
    assert.equal(code, 5)
    assert.equal(json.error.code, 'AWS_AUTH')
    assert.match(json.error.suggestions.join(' '), /AWS_ACCESS_KEY_ID/)
  })
})
