// The Cloud Storage layer, the gcs source, a run directory and a model repository on gs://, against
// fake-gcs-server, an emulator written independently of ml (the in-repo stand-in keeps the injected
// faults: lost answers, 503/429 bursts, request accounting).
// Before anything else: no test here may reach a host other than this machine.
import '../support/loopback-only.js'
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {mnistPng, readMnist} from '../../src/lib/data/mnist.js'
import {configureGcs, gcsListPrefix} from '../../src/lib/storage/gcs.js'
import {
  appendText,
  createWriter,
  downloadDir,
  errorCode,
  listNames,
  readBytes,
  readText,
  readVersioned,
  swapDir,
  writeFileAtomic,
} from '../../src/lib/storage/index.js'
import {runJson} from '../support/cli.js'
import {gsConfig, guardNetwork} from '../support/cloud-fixtures.js'
import {tempDir} from '../support/fixtures.js'
import {LOOPBACK_ONLY} from '../support/loopback-only.js'
import {referencePredictions, startServe} from '../support/serve-fixtures.js'
import {fakeGcsSkip, FakeGcs} from './support/fake-gcs.js'
import {roundTrip, streamsAndCopies, type StoreUnderTest} from '../scenarios/storage-contract.js'

const skip = fakeGcsSkip()
const BUCKET = 'ml-peer'
const uri = (key: string) => `gs://${BUCKET}/${key}`

let gcs: FakeGcs
let dir: string
let cleanup: () => Promise<void>
let checkNetwork: () => Promise<void>

before(async () => {
  if (skip) return
  ;({dir, cleanup} = await tempDir('ml-peer-gcs-'))
  checkNetwork = guardNetwork(dir)
  gcs = await FakeGcs.start([BUCKET])
  configureGcs({endpoint: gcs.url, auth: 'none', maxRetries: 2, maxRetryDelayMs: 1})
})
after(async () => {
  if (skip) return
  configureGcs(undefined)
  await gcs.close()
  await checkNetwork()
  await cleanup()
})

const store: StoreUnderTest = {
  uri: (key) => uri(key),
  names: async (prefix) => gcs.names(BUCKET, prefix),
  bytes: async (key) => gcs.get(BUCKET, key),
}

describe('the storage layer on fake-gcs-server', {skip}, () => {
  it('write, read, list, exists and remove round-trip', async () => {
    await roundTrip(store)
  })

  // A missing bucket is not checked here: fake-gcs-server answers it as a missing object, where Cloud
  // Storage says "The specified bucket does not exist." (the in-repo stand-in covers that case).
  it('a missing object reads as ENOENT, like a missing local file', async () => {
    await assert.rejects(readBytes(uri('no/such/object')), (error: unknown) => errorCode(error) === 'ENOENT')
  })

  it('streams reads, makes local copies, and uploads files over 8 MiB with a resumable session', async () => {
    await streamsAndCopies(store)
    const big = randomBytes(9 * 1024 * 1024 + 123)
    const writer = await createWriter(uri('stream/big.bin'))
    for (let i = 0; i < big.length; i += 1 << 20) await writer.write(big.subarray(i, i + (1 << 20)))
    await writer.commit()
    assert.ok((await gcs.get(BUCKET, 'stream/big.bin'))!.equals(big))
  })

  it('create-only and revision-matched writes detect other writers (generation preconditions)', async () => {
    await writeFileAtomic(uri('pre/manifest.json'), 'v1', {createOnly: true})
    await assert.rejects(writeFileAtomic(uri('pre/manifest.json'), 'again', {createOnly: true}), (e: unknown) => errorCode(e) === 'EEXIST')
    const read = await readVersioned(uri('pre/manifest.json'))
    assert.equal(read!.data.toString(), 'v1')
    await writeFileAtomic(uri('pre/manifest.json'), 'v2', {ifRevision: read!.revision})
    await assert.rejects(writeFileAtomic(uri('pre/manifest.json'), 'v2 from B', {ifRevision: read!.revision}), (e: unknown) => errorCode(e) === 'ECONFLICT')
    assert.equal(await readText(uri('pre/manifest.json')), 'v2')
  })

  // Listed in one page: fake-gcs-server cuts a listing at maxResults without a nextPageToken, so
  // paging is covered by the in-repo stand-in only.
  it('lists with prefixes and delimiters', async () => {
    for (let i = 0; i < 23; i++) await gcs.put(BUCKET, `paged/item-${String(i).padStart(2, '0')}`, 'x')
    await gcs.put(BUCKET, 'paged/dir-a/one', 'x')
    await gcs.put(BUCKET, 'paged/dir-b/two', 'x')
    const listing = await gcsListPrefix(BUCKET, 'paged/', '/')
    assert.equal(listing.objects.length, 23)
    assert.deepEqual(listing.prefixes, ['paged/dir-a/', 'paged/dir-b/'])
    assert.equal((await gcsListPrefix(BUCKET, 'paged/')).objects.length, 25)
    assert.deepEqual(await listNames(uri('paged')), [...Array.from({length: 23}, (_, i) => `item-${String(i).padStart(2, '0')}`), 'dir-a', 'dir-b'].sort())
  })

  it('swaps a staged folder into place, and concurrent appends all land', async () => {
    await writeFileAtomic(uri('models/m/1/model.json'), 'old model')
    await writeFileAtomic(uri('models/m/1/stale.bin'), 'old only')
    await writeFileAtomic(uri('models/m/.staging/model.json'), 'new model')
    await writeFileAtomic(uri('models/m/.staging/weights.bin'), 'new weights')
    await swapDir(uri('models/m/.staging'), uri('models/m/1'))
    assert.deepEqual(await gcs.names(BUCKET, 'models/m/'), ['models/m/1/model.json', 'models/m/1/weights.bin'])
    assert.equal(await readText(uri('models/m/1/model.json')), 'new model')
    await Promise.all(Array.from({length: 5}, (_, i) => appendText(uri('log/q.jsonl'), `line ${i}\n`)))
    assert.deepEqual((await readText(uri('log/q.jsonl'))).trim().split('\n').sort(), ['line 0', 'line 1', 'line 2', 'line 3', 'line 4'])
  })
})

describe('a project on gs:// of fake-gcs-server, through the CLI', {skip}, () => {
  const CONFIG = uri('proj/ml.yaml')
  let env: NodeJS.ProcessEnv

  before(async () => {
    env = {
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${LOOPBACK_ONLY}`.trim(),
      ML_TEST_NETLOG: path.join(dir, 'non-loopback.log'),
      // The emulator's conventional variable, which the Google client libraries read as well.
      STORAGE_EMULATOR_HOST: gcs.url,
      ML_GCS_ENDPOINT: '',
      GOOGLE_APPLICATION_CREDENTIALS: path.join(dir, 'no-credentials.json'),
      GOOGLE_CLOUD_PROJECT: 'ml-peers',
    }
    // Uploaded through the emulator's own API, not through ml.
    for (const [split, count] of [['train', 200], ['test', 40]] as const) {
      const sample = await readMnist(split, 0, count)
      for (let i = 0; i < count; i++) await gcs.put(BUCKET, `proj/images/${split}/${sample.labels[i]}/${split}-${String(i).padStart(5, '0')}.png`, await mnistPng(sample, i), 'image/png')
    }
    await gcs.put(BUCKET, 'proj/images/train/3/broken.png', 'not a png at all', 'image/png')
    await gcs.put(BUCKET, 'proj/ml.yaml', gsConfig(BUCKET, 'proj'), 'text/yaml')
  })

  it('ingests a gcs source into a gs:// store (quarantine included), trains into a gs:// run directory, exports to a gs:// model repository', async () => {
    const ingest = await runJson<Record<string, any>>(['ingest', '--config', CONFIG], {env, cwd: dir})
    assert.equal(ingest.code, 0, JSON.stringify(ingest.json) + ingest.stderr)
    assert.equal(ingest.json.accepted + ingest.json.duplicates, 240)
    assert.deepEqual(ingest.json.rejectedByReason, {'unsupported-format': 1})
    const names = await gcs.names(BUCKET, 'proj/dataset/')
    assert.ok(names.includes('proj/dataset/manifest.json') && !names.includes('proj/dataset/.lock'), names.join(', '))
    assert.match((await gcs.get(BUCKET, 'proj/dataset/quarantine.jsonl'))!.toString(), /proj\/images\/train\/3\/broken\.png/)
    const again = await runJson<Record<string, any>>(['ingest', '--config', CONFIG], {env, cwd: dir})
    assert.deepEqual([again.code, again.json.datasetVersion, again.json.accepted], [0, 1, 0], 'nothing new: same version')

    const train = await runJson<Record<string, any>>(['train', '--config', CONFIG], {env, cwd: dir})
    assert.equal(train.code, 0, train.stderr)
    assert.ok(train.json.runDir.startsWith(uri('proj/runs/digits-')), train.json.runDir)
    const runKey = train.json.runDir.slice(uri('').length)
    const files = (await gcs.names(BUCKET, `${runKey}/`)).map((n) => n.slice(runKey.length + 1))
    for (const f of ['run.json', 'metrics.jsonl', 'model/model.json', 'model/weights.bin', 'checkpoints/LATEST']) assert.ok(files.includes(f), `${f} in ${files.join(', ')}`)
    assert.equal(JSON.parse((await gcs.get(BUCKET, `${runKey}/run.json`))!.toString()).status, 'completed')

    const exported = await runJson<Record<string, any>>(['export', '--config', CONFIG], {env, cwd: dir})
    assert.equal(exported.code, 0, exported.stderr)
    assert.equal(exported.json.dir, uri('proj/models/digits/1'))
    assert.ok((await gcs.names(BUCKET, 'proj/models/digits/1/')).length > 0)
  })

  it('serves the model straight from the gs:// repository; its answers equal the same version run here', async () => {
    const server = await startServe(['--repository', uri('proj/models'), '--model', 'digits', '--port', '0', '--instances', '1'], {env, cwd: dir})
    try {
      await server.waitForEvent((e) => e.event === 'model-loaded' && e.version === 1)
      const sample = await readMnist('test', 0, 8)
      const digits = await Promise.all(Array.from({length: sample.count}, async (_, i) => ({label: String(sample.labels[i]), png: await mnistPng(sample, i)})))
      const answers: string[] = []
      for (const d of digits) {
        const response = await fetch(`${server.url}/v1/models/digits/versions/1:classify`, {method: 'POST', headers: {'Content-Type': 'image/png'}, body: d.png})
        assert.equal(response.status, 200, await response.clone().text())
        answers.push(((await response.json()) as {results: Array<Array<[string, number]>>}).results[0]![0]![0])
      }
      const local = path.join(dir, 'digits-1')
      await downloadDir(uri('proj/models/digits/1'), local)
      const {predictor, expected} = await referencePredictions(local, digits)
      const k = predictor.labels.length
      const top = digits.map((_, i) => {
        const row = expected.subarray(i * k, (i + 1) * k)
        return predictor.labels[row.indexOf(Math.max(...row))]!
      })
      assert.deepEqual(answers, top)
    } finally {
      server.child.kill('SIGTERM')
      const result = await server.done
      assert.equal(result.code, 0, result.stderr)
    }
  })
})
