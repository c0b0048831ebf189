// The storage layer on gs:// against the Cloud Storage stand-in, with the real @google-cloud/storage
// client: round trips, resumable uploads, preconditions, listings, retries and credential errors.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {after, afterEach, before, describe, it} from 'node:test'
import {loadConfig, resolvePath} from '../../../src/lib/config/load.js'
import {configureGcs, gcsListPrefix} from '../../../src/lib/storage/gcs.js'
import {
  appendText,
  baseName,
  createWriter,
  errorCode,
  listNames,
  parentOf,
  readBytes,
  readText,
  readVersioned,
  resolveLocation,
  swapDir,
  writeFileAtomic,
} from '../../../src/lib/storage/index.js'
import {UserError} from '../../../src/lib/errors.js'
import {guardNetwork} from '../../support/cloud-fixtures.js'
import {GcsServer} from '../../support/gcs-server.js'
import {roundTrip, streamsAndCopies, type StoreUnderTest} from '../../scenarios/storage-contract.js'

const BUCKET = 'ml-test'
let gcs: GcsServer
let local: string
let checkNetwork: () => Promise<void>

before(async () => {
  gcs = await GcsServer.start({buckets: [BUCKET]})
  local = await mkdtemp(path.join(os.tmpdir(), 'ml-storage-'))
  checkNetwork = guardNetwork(local)
  standIn()
})
after(async () => {
  configureGcs(undefined)
  await gcs.close()
  await checkNetwork()
  await rm(local, {recursive: true, force: true})
})
// Backoff capped at its floor (1 s, see gcs.ts): retry tests stay short and use the client's own retry path.
function standIn(): void {
  configureGcs({endpoint: gcs.url, auth: 'none', maxRetries: 3, maxRetryDelayMs: 1})
}
afterEach(() => standIn())

const uri = (key: string) => `gs://${BUCKET}/${key}`

const store: StoreUnderTest = {
  uri,
  names: async (prefix) => gcs.names(BUCKET, prefix),
  contentType: async (key) => gcs.get(BUCKET, key)?.contentType,
  bytes: async (key) => gcs.get(BUCKET, key)?.data,
}

describe('gs:// paths', () => {
  it('write, read, list, exists and remove round-trip', async () => {
    await roundTrip(store)
  })

  it('a missing object reads as ENOENT, like a missing local file', async () => {
    await assert.rejects(readBytes(uri('no/such/object')), (error: unknown) => errorCode(error) === 'ENOENT')
    await assert.rejects(
      readBytes('gs://no-such-bucket/x'),
      (error: unknown) => error instanceof UserError && error.code === 'GCS_BUCKET_NOT_FOUND',
    )
  })

  it('path helpers keep URIs intact', () => {
    assert.equal(resolveLocation('gs://b/x/'), 'gs://b/x')
    assert.equal(parentOf('gs://b/x/ml.yaml'), 'gs://b/x')
    assert.equal(parentOf('gs://b/ml.yaml'), 'gs://b')
    assert.equal(baseName('gs://b/x/ml.yaml'), 'ml.yaml')
  })

  it('reads a config from gs:// and resolves its relative paths under its prefix', async () => {
    await writeFileAtomic(uri('cfg/ml.yaml'), 'data:\n  sources: [{type: folder, path: images}]\n  store: dataset\ntrain:\n  runs: ../shared/runs\n')
    const loaded = await loadConfig(uri('cfg/ml.yaml'))
    assert.equal(loaded.file, uri('cfg/ml.yaml'))
    assert.equal(loaded.baseDir, uri('cfg'))
    assert.equal(resolvePath(loaded, loaded.config.data.store), uri('cfg/dataset'))
    assert.equal(resolvePath(loaded, loaded.config.train.runs), uri('shared/runs'))
    assert.equal(resolvePath(loaded, '/abs/local'), '/abs/local')
    await assert.rejects(loadConfig(uri('cfg/missing.yaml')), (e: unknown) => e instanceof UserError && e.code === 'CONFIG_NOT_FOUND')
  })

  it('streams reads and makes local copies', async () => {
    await streamsAndCopies(store)
  })

  it('serves ranged media downloads, compose and metageneration preconditions to the client', async () => {
    const {Storage} = await import('@google-cloud/storage')
    await writeFileAtomic(uri('range/r.bin'), Buffer.from('0123456789'))
    const bucket = new Storage({apiEndpoint: gcs.url}).bucket(BUCKET)
    const file = bucket.file('range/r.bin')
    const [part] = await file.download({start: 2, end: 5})
    assert.equal(part.toString(), '2345')
    // The stand-in's other JSON API features, through the same client.
    await writeFileAtomic(uri('range/tail.bin'), Buffer.from('ab'))
    await bucket.combine(['range/r.bin', 'range/tail.bin'], 'range/both.bin')
    assert.equal(gcs.get(BUCKET, 'range/both.bin')?.data.toString(), '0123456789ab')
    await file.setMetadata({metadata: {stage: 'one'}}, {ifMetagenerationMatch: 1})
    await assert.rejects(file.setMetadata({metadata: {stage: 'two'}}, {ifMetagenerationMatch: 1}), (e: {code?: number}) => e.code === 412)
    assert.equal(gcs.get(BUCKET, 'range/r.bin')?.metadata.stage, 'one')
  })

  it('uploads files over 8 MiB with a resumable session, chunk by chunk', async () => {
    const big = randomBytes(9 * 1024 * 1024 + 123)
    const before = gcs.requests.length
    await writeFileAtomic(uri('big/one.bin'), big)
    const seen = gcs.requests.slice(before)
    assert.ok(seen.some((r) => r.method === 'POST' && r.query.uploadType === 'resumable'), 'a resumable session was started')
    assert.equal(seen.filter((r) => r.method === 'PUT' && r.upload).length, 2, 'two chunks: 8 MiB and the rest')
    assert.deepEqual(gcs.get(BUCKET, 'big/one.bin')?.data, big)
    assert.deepEqual(await readBytes(uri('big/one.bin')), big)

    // The streaming writer spools locally and uploads the same way on commit.
    const writer = await createWriter(uri('big/two.bin'))
    for (let at = 0; at < big.length; at += 1 << 20) await writer.write(big.subarray(at, at + (1 << 20)))
    assert.equal(gcs.get(BUCKET, 'big/two.bin'), undefined, 'nothing is visible before commit')
    await writer.commit()
    assert.deepEqual(gcs.get(BUCKET, 'big/two.bin')?.data, big)
  })

  it('resends a resumable chunk that failed with 503', async () => {
    const big = randomBytes(8 * 1024 * 1024 + 10)
    gcs.failNext(1, 503, (r) => r.method === 'PUT' && r.upload)
    await writeFileAtomic(uri('big/retried.bin'), big)
    assert.deepEqual(gcs.get(BUCKET, 'big/retried.bin')?.data, big)
  })

  it('create-only writes and revision-matched writes detect other writers', async () => {
    await writeFileAtomic(uri('pre/lock'), 'me', {createOnly: true})
    await assert.rejects(writeFileAtomic(uri('pre/lock'), 'someone else', {createOnly: true}), (e: unknown) => errorCode(e) === 'EEXIST')
    assert.equal(await readText(uri('pre/lock')), 'me')

    await writeFileAtomic(uri('pre/manifest.json'), 'v1')
    const read = await readVersioned(uri('pre/manifest.json'))
    assert.equal(read?.data.toString(), 'v1')
    assert.equal(read?.revision, String(gcs.get(BUCKET, 'pre/manifest.json')?.generation))
    const rev2 = await writeFileAtomic(uri('pre/manifest.json'), 'v2', {ifRevision: read!.revision})
    assert.equal(rev2, String(gcs.get(BUCKET, 'pre/manifest.json')?.generation))
    // A writer still holding the first revision lost the race.
    await assert.rejects(writeFileAtomic(uri('pre/manifest.json'), 'v2 from B', {ifRevision: read!.revision}), (e: unknown) => errorCode(e) === 'ECONFLICT')
    assert.equal(await readText(uri('pre/manifest.json')), 'v2')
    assert.ok(gcs.seen('POST').some((r) => r.query.ifGenerationMatch === '0'), 'create-only is ifGenerationMatch=0')
    assert.equal(await readVersioned(uri('pre/none')), undefined)
  })

  it('a create-only write whose first attempt landed but whose answer was lost still succeeds', async () => {
    // The object is stored, the connection drops, the client retries and meets ifGenerationMatch=0.
    gcs.loseAnswerNext(1, (r) => r.upload)
    await writeFileAtomic(uri('pre/idem'), 'same bytes', {createOnly: true})
    assert.equal(await readText(uri('pre/idem')), 'same bytes')
    const attempts = gcs.seen('POST', `/b/${BUCKET}/o`).filter((r) => r.upload && r.query.name === 'pre/idem')
    assert.equal(attempts.length, 2)
    assert.equal(attempts[1]!.status, 412)
    // Someone else's bytes are still a conflict.
    await assert.rejects(writeFileAtomic(uri('pre/idem'), 'other bytes', {createOnly: true}), (e: unknown) => errorCode(e) === 'EEXIST')
  })

  it('retries reads and writes after injected 503 and 429 answers', async () => {
    const before = gcs.requests.length
    gcs.failNext(1, 503)
    await writeFileAtomic(uri('retry/a.txt'), 'after a 503')
    gcs.failNext(1, 429)
    assert.equal(await readText(uri('retry/a.txt')), 'after a 503')
    gcs.failNext(1, 503, (r) => r.method === 'GET' && r.query.prefix !== undefined)
    assert.deepEqual(await listNames(uri('retry')), ['a.txt'])
    gcs.failNext(1, 503, (r) => r.method === 'POST' && r.query.ifGenerationMatch !== undefined)
    await writeFileAtomic(uri('retry/b.txt'), 'create-only, retried', {createOnly: true})
    const injected = gcs.requests.slice(before).filter((r) => r.injected)
    assert.equal(injected.length, 4)
    assert.equal(await readText(uri('retry/b.txt')), 'create-only, retried')
  })

  it('gives up after the configured retries with a service error (exit 5)', async () => {
    configureGcs({endpoint: gcs.url, auth: 'none', maxRetries: 1, maxRetryDelayMs: 1})
    gcs.failNext(10, 503)
    const before = gcs.requests.length
    await assert.rejects(readBytes(uri('retry/a.txt')), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'GCS_UNAVAILABLE')
      assert.equal(error.exitCode, 5)
      return true
    })
    assert.equal(gcs.requests.length - before, 2, 'one try and one retry')
    gcs.clearFailures()
  })

  it('lists across pages with prefixes and delimiters', async () => {
    for (let i = 0; i < 23; i++) gcs.put(BUCKET, `paged/item-${String(i).padStart(2, '0')}`, 'x')
    gcs.put(BUCKET, 'paged/dir-a/one', 'x')
    gcs.put(BUCKET, 'paged/dir-b/two', 'x')
    const before = gcs.requests.length
    const listing = await gcsListPrefix(BUCKET, 'paged/', '/', 5)
    assert.equal(listing.objects.length, 23)
    assert.deepEqual(listing.prefixes, ['paged/dir-a/', 'paged/dir-b/'])
    const pages = gcs.requests.slice(before)
    assert.equal(pages.length, 5)
    assert.ok(pages.slice(1).every((r) => r.query.pageToken), 'later pages carry the page token')
    assert.equal((await gcsListPrefix(BUCKET, 'paged/', undefined, 4)).objects.length, 25)
  })

  it('swaps a staged folder into place without rename', async () => {
    await writeFileAtomic(uri('models/m/1/model.json'), 'old model')
    await writeFileAtomic(uri('models/m/1/stale.bin'), 'old only')
    await writeFileAtomic(uri('models/m/.staging/model.json'), 'new model')
    await writeFileAtomic(uri('models/m/.staging/weights.bin'), 'new weights')
    const order: string[] = []
    const onObject = (o: {name: string}) => order.push(o.name)
    gcs.on('object', onObject)
    await swapDir(uri('models/m/.staging'), uri('models/m/1'))
    gcs.off('object', onObject)
    assert.deepEqual(gcs.names(BUCKET, 'models/m/'), ['models/m/1/model.json', 'models/m/1/weights.bin'])
    assert.equal(await readText(uri('models/m/1/model.json')), 'new model')
    assert.deepEqual(order, ['models/m/1/weights.bin', 'models/m/1/model.json'], 'weights land before the model.json naming them')
  })

  it('appends by rewriting under a generation precondition, so concurrent appends all land', async () => {
    await Promise.all(Array.from({length: 5}, (_, i) => appendText(uri('log/q.jsonl'), `line ${i}\n`)))
    const lines = (await readText(uri('log/q.jsonl'))).trim().split('\n').sort()
    assert.deepEqual(lines, ['line 0', 'line 1', 'line 2', 'line 3', 'line 4'])
  })

  it('refuses other URI schemes', async () => {
    // s3:// has its own backend (test/lib/aws/s3-storage.test.ts).
    await assert.rejects(readText('azure://bucket/x'), (e: unknown) => e instanceof UserError && e.code === 'STORAGE_UNSUPPORTED')
  })
})

describe('credentials', () => {
  const saved = process.env.GOOGLE_APPLICATION_CREDENTIALS
  after(() => {
    if (saved === undefined) delete process.env.GOOGLE_APPLICATION_CREDENTIALS
    else process.env.GOOGLE_APPLICATION_CREDENTIALS = saved
  })

  for (const [what, endpoint] of [
    ['the stand-in with ADC required', 'stand-in'],
    ['the production endpoint', undefined],
  ] as const) {
    it(`fails fast with GCS_AUTH and what to set when ADC is missing (${what}), before any request`, async () => {
      process.env.GOOGLE_APPLICATION_CREDENTIALS = path.join(local, 'no-such-key.json')
      // With no endpoint this is the production client: the credentials check fails on the missing
      // key file before a request is built, so nothing leaves the machine.
      configureGcs({endpoint: endpoint === 'stand-in' ? gcs.url : undefined, auth: 'adc', maxRetries: 0, maxRetryDelayMs: 1})
      const before = gcs.requests.length
      await assert.rejects(readText('gs://ml-test/anything.yaml'), (error: unknown) => {
        assert.ok(error instanceof UserError, String(error))
        assert.equal(error.code, 'GCS_AUTH')
        assert.equal(error.exitCode, 5)
        assert.match(error.suggestions.join('\n'), /gcloud auth application-default login/)
        assert.match(error.suggestions.join('\n'), /GOOGLE_APPLICATION_CREDENTIALS/)
        return true
      })
      assert.equal(gcs.requests.length, before, 'no request reached the server')
    })
  }
})

describe('local paths keep their semantics', () => {
  it('create-only and revision checks work on a local disk too', async () => {
    const file = path.join(local, 'x', 'lock')
    await writeFileAtomic(file, 'a', {createOnly: true})
    await assert.rejects(writeFileAtomic(file, 'b', {createOnly: true}), (e: unknown) => errorCode(e) === 'EEXIST')
    const v = await readVersioned(file)
    await writeFile(file, 'changed behind our back, longer')
    await assert.rejects(writeFileAtomic(file, 'c', {ifRevision: v!.revision}), (e: unknown) => errorCode(e) === 'ECONFLICT')
    const writer = await createWriter(path.join(local, 'x', 'streamed'))
    await writer.write(Buffer.from('ab'))
    await writer.write(Buffer.from('cd'))
    await writer.commit()
    assert.equal(await readText(path.join(local, 'x', 'streamed')), 'abcd')
    await appendText(path.join(local, 'x', 'streamed'), 'e')
    assert.equal(await readText(path.join(local, 'x', 'streamed')), 'abcde')
  })

  it('a local writer that syncs as the file grows publishes every byte, and an abort mid-sync leaves nothing', async () => {
    // 1 MiB chunks past the 8 MiB mark, so background fdatasyncs run while later chunks are written.
    const chunks = Array.from({length: 20}, (_, i) => Buffer.alloc(1 << 20, i + 1))
    const file = path.join(local, 'x', 'grown')
    const writer = await createWriter(file)
    for (const chunk of chunks) await writer.write(chunk)
    await writer.commit()
    assert.ok((await readFile(file)).equals(Buffer.concat(chunks)))

    const dropped = path.join(local, 'x', 'dropped')
    const aborted = await createWriter(dropped)
    for (const chunk of chunks.slice(0, 9)) await aborted.write(chunk)
    await aborted.abort()
    assert.deepEqual((await readdir(path.join(local, 'x'))).filter((name) => name.includes('dropped')), [])
  })
})
