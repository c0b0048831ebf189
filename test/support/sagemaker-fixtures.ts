// What the SageMaker tests share: a project on moto's S3 with its dataset ingested, running a job's
// container as SageMaker runs it, and a proxy in front of moto's SageMaker that lets a test replace the
// answer to one operation (x-amz-target), for what moto does not do: jobs that fail, run for a while,
// stop, or list a tuning job's trials.
import assert from 'node:assert/strict'
import {mkdir, writeFile} from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import {SageMakerClient} from '@aws-sdk/client-sagemaker'
import {downloadDir} from '../../src/lib/storage/index.js'
import {configureS3} from '../../src/lib/storage/s3.js'
import {createBuckets, putObject, uploadMnistS3, type MotoWorkspace} from './aws-fixtures.js'
import {runCli, runJson, type CliResult} from './cli.js'

export interface SageMakerProject {
  /** s3://<bucket>/proj/ml.yaml */
  config: string
  /** A SageMaker client on moto. */
  sagemaker: SageMakerClient
  /** Destroys the client and points this process's s3:// storage back at AWS's default. */
  close(): void
}

/**
 * A project on moto's S3: 150 training and 30 test MNIST digits under s3://<bucket>/proj/images,
 * `yaml` as s3://<bucket>/proj/ml.yaml, and its dataset ingested through the CLI (with `env`); this
 * process's s3:// storage is pointed at moto too.
 */
export async function sagemakerProject(ws: MotoWorkspace, bucket: string, yaml: string, env: NodeJS.ProcessEnv = ws.env): Promise<SageMakerProject> {
  const {moto} = ws
  const sagemaker = new SageMakerClient({endpoint: moto.url, region: 'us-east-1', credentials: {accessKeyId: 'testing', secretAccessKey: 'testing'}})
  await createBuckets(moto.url, bucket)
  await uploadMnistS3(moto.url, bucket, 'proj/images/train', 'train', 150)
  await uploadMnistS3(moto.url, bucket, 'proj/images/test', 'test', 30)
  await putObject(moto.url, bucket, 'proj/ml.yaml', yaml)
  configureS3({endpoint: moto.url, forcePathStyle: true})
  const config = `s3://${bucket}/proj/ml.yaml`
  const ingest = await runJson(['ingest', '--config', config], {env, cwd: ws.dir})
  assert.equal(ingest.code, 0, ingest.stderr)
  return {
    config,
    sagemaker,
    close() {
      sagemaker.destroy()
      configureS3(undefined)
    },
  }
}

/**
 * Runs a job's container command as SageMaker does: `<image> train` (ml train `args`) with /opt/ml laid
 * out under `root`: hyperparameters.json, and the `training` channel (`channelUri`, an s3:// prefix)
 * copied to input/data/training unless `channelUri` is undefined (an empty channel).
 */
export async function runSageMakerContainer(options: {
  job: string
  root: string
  hyperparameters: Record<string, string> | undefined
  channelUri: string | undefined
  env: NodeJS.ProcessEnv
  args?: string[]
}): Promise<CliResult> {
  const {root} = options
  await mkdir(path.join(root, 'input', 'config'), {recursive: true})
  await writeFile(path.join(root, 'input', 'config', 'hyperparameters.json'), JSON.stringify(options.hyperparameters ?? {}))
  await mkdir(path.join(root, 'input', 'data', 'training'), {recursive: true})
  if (options.channelUri) await downloadDir(options.channelUri.replace(/\/$/, ''), path.join(root, 'input', 'data', 'training'))
  return runCli(['train', ...(options.args ?? [])], {env: {...options.env, TRAINING_JOB_NAME: options.job, ML_SAGEMAKER_ROOT: root}, cwd: root})
}

/** A proxy to moto that lets a test replace the answer to one SageMaker operation. */
export async function sagemakerProxy(target: string) {
  const upstream = new URL(target)
  const seen: string[] = []
  const waiting: Array<{operation: string; resolve: () => void}> = []
  const answers = new Map<string, (body: Record<string, unknown>) => Record<string, unknown> | undefined>()
  const server = http.createServer((req, res) => {
    const operation = String(req.headers['x-amz-target'] ?? '').replace(/^SageMaker\./, '')
    if (operation) {
      seen.push(operation)
      for (const w of waiting.filter((w) => w.operation === operation)) {
        waiting.splice(waiting.indexOf(w), 1)
        w.resolve()
      }
    }
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const rewrite = answers.get(operation)
      const forward = http.request({host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers}, (answer) => {
        const body: Buffer[] = []
        answer.on('data', (c: Buffer) => body.push(c))
        answer.on('end', () => {
          let data = Buffer.concat(body)
          let status = answer.statusCode ?? 502
          if (rewrite) {
            const parsed = status === 200 ? (JSON.parse(data.toString() || '{}') as Record<string, unknown>) : {}
            data = Buffer.from(JSON.stringify(rewrite(parsed) ?? {}))
            status = 200
          }
          res.writeHead(status, {'content-type': 'application/x-amz-json-1.1', 'content-length': String(data.length)})
          res.end(data)
        })
      })
      forward.on('error', () => res.destroy())
      forward.end(Buffer.concat(chunks))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as {port: number}).port}`,
    seen,
    answers,
    /** Resolves once the proxy has received `operation` (at once if it already has). */
    waitFor: (operation: string) => new Promise<void>((resolve) => (seen.includes(operation) ? resolve() : waiting.push({operation, resolve}))),
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
}
