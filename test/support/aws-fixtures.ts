// Fixtures for the AWS tests: the emulator (moto) per test file, buckets and streams made with the real
// SDK clients, MNIST digits uploaded as PNGs, a config on s3://, and the environment that points the
// ml CLI at the emulator (and nowhere else).
import http from 'node:http'
import {GetRecordsCommand, GetShardIteratorCommand, KinesisClient, ListShardsCommand, type _Record} from '@aws-sdk/client-kinesis'
import {CreateBucketCommand, PutObjectCommand, S3Client} from '@aws-sdk/client-s3'
import {NodeHttpHandler} from '@smithy/node-http-handler'
import {bucketConfig, loopbackEnv, uploadDigits} from './bucket-fixtures.js'
import {guardNetwork} from './cloud-fixtures.js'
import {tempDir} from './fixtures.js'
import {AWS_TEST_ENV, MotoServer} from './moto-server.js'

/** What a test file runs against: a temp folder, moto, and the environment that points `ml` at it. */
export interface MotoWorkspace {
  moto: MotoServer
  dir: string
  env: NodeJS.ProcessEnv
  /** Stops moto, checks that no connection to another host was attempted, removes the folder. */
  close(): Promise<void>
}

/** A temp folder named from `prefix` with the loopback guard's log in it, test credentials, and moto started. */
export async function motoWorkspace(prefix: string): Promise<MotoWorkspace> {
  const {dir, cleanup} = await tempDir(prefix)
  const checkNetwork = guardNetwork(dir)
  useTestCredentials()
  let moto: MotoServer
  try {
    moto = await MotoServer.start()
  } catch (error) {
    await cleanup()
    throw error
  }
  return {
    moto,
    dir,
    env: awsEnv(moto, dir),
    async close() {
      await moto.close()
      await checkNetwork()
      await cleanup()
    },
  }
}

/** A Kinesis client on moto. moto serves HTTP/1.1; the Kinesis client would use HTTP/2. */
export function kinesisClient(url: string): KinesisClient {
  return new KinesisClient({endpoint: url, region: 'us-east-1', credentials: {accessKeyId: 'testing', secretAccessKey: 'testing'}, requestHandler: new NodeHttpHandler()})
}

/** Every record of `stream`, read from the start of each shard: shard id -> records in order. */
export async function shardRecords(kinesis: KinesisClient, stream: string): Promise<Map<string, _Record[]>> {
  const out = new Map<string, _Record[]>()
  for (const shard of (await kinesis.send(new ListShardsCommand({StreamName: stream}))).Shards ?? []) {
    const records: _Record[] = []
    let iterator = (await kinesis.send(new GetShardIteratorCommand({StreamName: stream, ShardId: shard.ShardId!, ShardIteratorType: 'TRIM_HORIZON'}))).ShardIterator
    for (;;) {
      const answer = await kinesis.send(new GetRecordsCommand({ShardIterator: iterator!}))
      records.push(...(answer.Records ?? []))
      if ((answer.Records ?? []).length === 0 || !answer.NextShardIterator) break
      iterator = answer.NextShardIterator
    }
    out.set(shard.ShardId!, records)
  }
  return out
}

/** Puts the fake credentials and region into this process's environment (the SDK's default chain reads them). */
export function useTestCredentials(): void {
  Object.assign(process.env, AWS_TEST_ENV)
}

export function s3Client(url: string): S3Client {
  return new S3Client({endpoint: url, forcePathStyle: true, region: 'us-east-1', credentials: {accessKeyId: 'testing', secretAccessKey: 'testing'}})
}

export async function createBuckets(url: string, ...buckets: string[]): Promise<void> {
  const client = s3Client(url)
  for (const Bucket of buckets) await client.send(new CreateBucketCommand({Bucket}))
  client.destroy()
}

/** Uploads `count` MNIST digits of `split` as PNGs under s3://<bucket>/<prefix>/<digit>/<n>.png. */
export async function uploadMnistS3(url: string, bucket: string, prefix: string, split: 'train' | 'test', count: number): Promise<void> {
  const client = s3Client(url)
  await uploadDigits(prefix, split, count, (Key, png) => client.send(new PutObjectCommand({Bucket: bucket, Key, Body: png, ContentType: 'image/png'})))
  client.destroy()
}

export async function putObject(url: string, bucket: string, key: string, body: string | Uint8Array): Promise<void> {
  const client = s3Client(url)
  await client.send(new PutObjectCommand({Bucket: bucket, Key: key, Body: body}))
  client.destroy()
}

/** Environment for `ml` child processes: every AWS client on the emulator, fake credentials, short backoff. */
export function awsEnv(moto: MotoServer, dir: string): NodeJS.ProcessEnv {
  return {
    ...AWS_TEST_ENV,
    ...loopbackEnv(dir),
    ML_AWS_ENDPOINT: moto.url,
    ML_AWS_RETRIES: '2',
    ML_AWS_MAX_RETRY_DELAY_MS: '200',
    ML_SAGEMAKER_POLL_MS: '40',
    ML_KINESIS_POLL_MS: '40',
    // Child processes must not inherit a parent's SageMaker job environment.
    SM_MODEL_DIR: '',
    SM_CHANNEL_TRAINING: '',
    SM_OUTPUT_DATA_DIR: '',
    SM_TRAINING_ENV: '',
  }
}

/** An MNIST config whose data, runs and exports are all on s3://<bucket>/<root>. */
export function s3Config(bucket: string, root: string, overrides: {train?: object; data?: object; sagemaker?: object} = {}): string {
  return bucketConfig(`s3://${bucket}/${root}`, 's3', overrides, {train: overrides.sagemaker ? {sagemaker: overrides.sagemaker} : {}})
}

/**
 * A proxy in front of the emulator that answers the first `failures` requests matching `when` with
 * `status` (503 SlowDown, as S3 does under load) and forwards everything else: the SDK's retries are
 * then exercised against the real emulator behind it.
 */
export async function faultProxy(target: string): Promise<{url: string; fail(count: number, status?: number, when?: (req: http.IncomingMessage) => boolean): void; failed: number; close(): Promise<void>}> {
  let remaining = 0
  let status = 503
  let when: (req: http.IncomingMessage) => boolean = () => true
  const state = {failed: 0}
  const upstream = new URL(target)
  const server = http.createServer((req, res) => {
    if (remaining > 0 && when(req)) {
      remaining--
      state.failed++
      req.resume()
      res.writeHead(status, {'Content-Type': 'application/xml'})
      res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
      return
    }
    const forward = http.request({host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers}, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    forward.on('error', () => res.destroy())
    req.pipe(forward)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as {port: number}
  return {
    url: `http://127.0.0.1:${port}`,
    fail(count, s = 503, w = () => true) {
      remaining = count
      status = s
      when = w
    },
    get failed() {
      return state.failed
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
