// The storage layer on s3:// against moto's S3 (a real emulator, started per file) with the real AWS
// SDK: round trips, multipart uploads, If-None-Match / If-Match writes, listings, swaps, retries and
// credential errors. Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, afterEach, before, describe, it} from 'node:test'
import {GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command} from '@aws-sdk/client-s3'
import {loadConfig} from '../../../src/lib/config/load.js'
import {UserError} from '../../../src/lib/errors.js'
import {awsSettingsFromEnv} from '../../../src/lib/cloud/aws.js'
import {configureS3} from '../../../src/lib/storage/s3.js'
import {roundTrip, streamsAndCopies, type StoreUnderTest} from '../../scenarios/storage-contract.js'
import {
  appendText,
  createWriter,
  errorCode,
  exists,
  listNames,
  openRead,
  readBytes,
  readText,
  readVersioned,
  swapDir,
  writeFileAtomic,
} from '../../../src/lib/storage/index.js'
import {createBuckets, faultProxy, s3Client, useTestCredentials} from '../../support/aws-fixtures.js'
import {guardNetwork} from '../../support/cloud-fixtures.js'
import {tempDir} from '../../support/fixtures.js'
import {MotoServer} from '../../support/moto-server.js'

const BUCKET = 'ml-test'
const uri = (key: string) => `s3://${BUCKET}/${key}`
let moto: MotoServer
let dir: string
let cleanup: () => Promise<void>
let checkNetwork: () => Promise<void>

before(async () => {
  ;({dir, cleanup} = await tempDir('ml-s3-'))
  checkNetwork = guardNetwork(dir)
  useTestCredentials()
  moto = await MotoServer.start()
  await createBuckets(moto.url, BUCKET)
  onEmulator()
})
after(async () => {
  configureS3(undefined)
  await moto.close()
  await checkNetwork()
  await cleanup()
})
function onEmulator(): void {
  configureS3({endpoint: moto.url, forcePathStyle: true, maxRetries: 2, maxRetryDelayMs: 20})
}
afterEach(() => {
  useTestCredentials()
  onEmulator()
})

const store: StoreUnderTest = {
  uri,
  names: async (prefix) => {
    const listed = await s3Client(moto.url).send(new ListObjectsV2Command({Bucket: BUCKET, Prefix: prefix}))
    return (listed.Contents ?? []).map((o) => o.Key!).sort()
  },
  contentType: async (key) => (await s3Client(moto.url).send(new HeadObjectCommand({Bucket: BUCKET, Key: key}))).ContentType,
  bytes: async (key) => Buffer.from(await (await s3Client(moto.url).send(new GetObjectCommand({Bucket: BUCKET, Key: key}))).Body!.transformToByteArray()),
}

describe('s3:// paths', () => {
  it('write, read, list, exists and remove round-trip', async () => {
    await roundTrip(store)
  })

  it('a missing object reads as ENOENT and a missing bucket is a usage error naming it', async () => {
    await assert.rejects(readBytes(uri('nope/missing.bin')), (error: unknown) => errorCode(error) === 'ENOENT')
    assert.equal(await readVersioned(uri('nope/missing.bin')), undefined)
    await assert.rejects(readBytes('s3://no-such-bucket/x'), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'S3_BUCKET_NOT_FOUND')
      assert.match(error.message, /bucket no-such-bucket does not exist/)
      return true
    })
    await assert.rejects(readBytes('s3://A_b/x'), (error: unknown) => error instanceof UserError && error.code === 'STORAGE_URI')
  })

  it('reads a config from s3:// and resolves its relative paths under its prefix', async () => {
    await writeFileAtomic(uri('proj/ml.yaml'), 'name: x\ndata:\n  sources: [{type: s3, uri: s3://ml-test/proj/images}]\n  store: dataset\n')
    const loaded = await loadConfig(uri('proj/ml.yaml'))
    assert.equal(loaded.file, uri('proj/ml.yaml'))
    assert.equal(loaded.baseDir, uri('proj'))
    assert.equal(loaded.config.data.sources[0]!.type, 's3')
  })

  it('streams reads and makes local copies', async () => {
    await streamsAndCopies(store)
    // The GET is made before openRead returns, so a missing object rejects there.
    await assert.rejects(openRead(uri('stream/missing')), (error: unknown) => errorCode(error) === 'ENOENT')
  })

  it('uploads files over 8 MiB as multipart uploads (lib-storage), leaving no upload open', async () => {
    const data = randomBytes(20 * 1024 * 1024 + 123)
    const writer = await createWriter(uri('big/shard.tfrecord'))
    for (let at = 0; at < data.length; at += 1 << 20) await writer.write(data.subarray(at, at + (1 << 20)))
    assert.equal(await exists(uri('big/shard.tfrecord')), false, 'nothing visible before commit')
    const revision = await writer.commit({createOnly: true})
    assert.match(revision, /-3"$/, 'three parts of 8 MiB: the ETag of a multipart upload')
    assert.deepEqual(await readBytes(uri('big/shard.tfrecord')), data)
    // A second create-only multipart upload of the same name fails at CompleteMultipartUpload.
    const again = await createWriter(uri('big/shard.tfrecord'))
    await again.write(randomBytes(9 * 1024 * 1024))
    await assert.rejects(again.commit({createOnly: true}), (error: unknown) => errorCode(error) === 'EEXIST')
    const open = await s3Client(moto.url).send(new ListMultipartUploadsCommand({Bucket: BUCKET}))
    assert.deepEqual(open.Uploads ?? [], [], 'failed uploads are aborted')
    assert.deepEqual(await readBytes(uri('big/shard.tfrecord')), data, 'the first upload is intact')
  })

  it('create-only writes (If-None-Match) and revision-matched writes (If-Match) detect other writers', async () => {
    const first = await writeFileAtomic(uri('cas/manifest.json'), '{"v":1}', {createOnly: true})
    await assert.rejects(writeFileAtomic(uri('cas/manifest.json'), '{"v":9}', {createOnly: true}), (error: unknown) => errorCode(error) === 'EEXIST')
    const read = await readVersioned(uri('cas/manifest.json'))
    assert.equal(read?.revision, first)
    const second = await writeFileAtomic(uri('cas/manifest.json'), '{"v":2}', {ifRevision: first})
    assert.notEqual(second, first)
    await assert.rejects(writeFileAtomic(uri('cas/manifest.json'), '{"v":3}', {ifRevision: first}), (error: unknown) => errorCode(error) === 'ECONFLICT')
    assert.equal(await readText(uri('cas/manifest.json')), '{"v":2}')
  })

  it('appends by rewriting under If-Match, so concurrent appends all land', async () => {
    await Promise.all(Array.from({length: 6}, (_, i) => appendText(uri('log/q.jsonl'), `line ${i}\n`)))
    const lines = (await readText(uri('log/q.jsonl'))).trim().split('\n').sort()
    assert.deepEqual(lines, Array.from({length: 6}, (_, i) => `line ${i}`))
  })

  it('swaps a staged folder into place without rename', async () => {
    await writeFileAtomic(uri('models/m/1/weights.bin'), 'old')
    await writeFileAtomic(uri('models/m/1/stale.bin'), 'stale')
    await writeFileAtomic(uri('models/m/.staging/weights.bin'), 'new weights')
    await writeFileAtomic(uri('models/m/.staging/model json.json'), '{}')
    await swapDir(uri('models/m/.staging'), uri('models/m/1'))
    assert.deepEqual(await listNames(uri('models/m/1')), ['model json.json', 'weights.bin'])
    assert.equal(await readText(uri('models/m/1/weights.bin')), 'new weights')
    assert.equal(await exists(uri('models/m/.staging')), false)
  })

  it('retries reads and writes after 503 SlowDown answers, and gives up after the configured retries (exit 5)', async () => {
    const proxy = await faultProxy(moto.url)
    try {
      configureS3({endpoint: proxy.url, forcePathStyle: true, maxRetries: 2, maxRetryDelayMs: 20})
      proxy.fail(2)
      await writeFileAtomic(uri('retry/a.txt'), 'kept')
      proxy.fail(2)
      assert.equal(await readText(uri('retry/a.txt')), 'kept')
      assert.equal(proxy.failed, 4)
      proxy.fail(3)
      await assert.rejects(readText(uri('retry/a.txt')), (error: unknown) => {
        assert.ok(error instanceof UserError)
        assert.equal(error.code, 'S3_UNAVAILABLE')
        assert.equal(error.exitCode, 5)
        return true
      })
      assert.equal(proxy.failed, 7)
    } finally {
      await proxy.close()
    }
  })

  it('refuses other URI schemes', async () => {
    await assert.rejects(readBytes('azure://x/y'), (error: unknown) => error instanceof UserError && error.code === 'STORAGE_UNSUPPORTED' && /s3:\/\//.test(error.message))
  })
})

describe('settings and credentials', () => {
  it('reads endpoint, path style, region and retries from the environment', () => {
    assert.deepEqual(awsSettingsFromEnv('s3', {ML_S3_ENDPOINT: '127.0.0.1:9000', AWS_REGION: 'eu-west-1'}), {
      region: 'eu-west-1',
      endpoint: 'http://127.0.0.1:9000',
      forcePathStyle: true,
      maxRetries: 6,
      maxRetryDelayMs: 20_000,
    })
    const real = awsSettingsFromEnv('s3', {})
    assert.equal(real.endpoint, undefined)
    assert.equal(real.forcePathStyle, false)
    assert.equal(awsSettingsFromEnv('s3', {ML_AWS_ENDPOINT: 'http://h:1', ML_S3_FORCE_PATH_STYLE: 'false'}).forcePathStyle, false)
    assert.equal(awsSettingsFromEnv('kinesis', {ML_AWS_ENDPOINT: 'http://h:1', ML_KINESIS_ENDPOINT: 'http://k:2'}).endpoint, 'http://k:2')
  })

  it('fails fast with AWS_AUTH naming what to set when the default chain finds no credentials, before any request', async () => {
    const saved = {...process.env}
    const proxy = await faultProxy(moto.url)
    try {
      for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE']) delete process.env[name]
      process.env.AWS_CONFIG_FILE = path.join(dir, 'no-config')
      process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(dir, 'no-credentials')
      await writeFile(path.join(dir, 'no-config'), '')
      configureS3({endpoint: proxy.url, forcePathStyle: true, maxRetries: 0})
      proxy.fail(1000)
      await assert.rejects(readBytes(uri('any')), (error: unknown) => {
        assert.ok(error instanceof UserError)
        assert.equal(error.code, 'AWS_AUTH')
        assert.equal(error.exitCode, 5)
        assert.match(error.suggestions.join(' '), /AWS_ACCESS_KEY_ID/)
        assert.match(error.suggestions.join(' '), /AWS_PROFILE/)
        return true
      })
      assert.equal(proxy.failed, 0, 'no request was sent')
    } finally {
      process.env = saved
      await proxy.close()
    }
  })
})
