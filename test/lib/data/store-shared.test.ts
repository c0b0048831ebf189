// Several writers on one dataset store (the members of a Kafka consumer group): commits are a
// compare-and-swap on the next manifest version, so racing writers both land and none is lost, on a
// local folder and on Cloud Storage (the in-repo stand-in, with generation preconditions); a member
// that lost a partition (a zombie) is fenced out of the commit; class indices are agreed.
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {createHash} from 'node:crypto'
import {once} from 'node:events'
import {mkdir, readdir, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import sharp from 'sharp'
import type {ImageSpec} from '../../../src/lib/config/schema.js'
import {DatasetStore, loadSplit, readManifest} from '../../../src/lib/data/store.js'
import type {ImageRecord, SourceCheckpoints, SourceClaims} from '../../../src/lib/data/types.js'
import {UserError} from '../../../src/lib/errors.js'
import {configureGcs} from '../../../src/lib/storage/gcs.js'
import {listNames} from '../../../src/lib/storage/index.js'
import {startCloudStorage, type CloudStorageStandIn} from '../../support/cloud-fixtures.js'
import type {GcsServer} from '../../support/gcs-server.js'

const grey: ImageSpec = {width: 4, height: 3, channels: 1, fit: 'fill'}
const rule = {validation: 0.1, test: 0.1, seed: 0}
const history = {accepted: 1, duplicates: 0, rejected: 0, sources: ['kafka:digits']}
const BUCKET = 'stores'

let storage: CloudStorageStandIn
let dir: string
let gcs: GcsServer
before(async () => {
  storage = await startCloudStorage('ml-store-shared-', [BUCKET])
  ;({dir, gcs} = storage)
  configureGcs({endpoint: gcs.url, auth: 'none', maxRetries: 1, maxRetryDelayMs: 1})
})
after(() => storage.close())

async function record(store: DatasetStore, i: number, className: string): Promise<ImageRecord> {
  const raw = new Uint8Array(12).map((_, j) => (i * 37 + j * 11) & 0xff)
  return {
    key: createHash('sha256').update(`img ${i}`).digest('hex'),
    label: await store.ensureClass(className),
    text: className,
    encoded: await sharp(raw, {raw: {width: 4, height: 3, channels: 1}}).png().toBuffer(),
    height: 3,
    width: 4,
    channels: 1,
    origin: `kafka:digits/0/${i}`,
  }
}

const kafka = (positions: Record<string, string>): SourceCheckpoints => ({kafka: {g: {digits: positions}}})
const claims = (positions: Record<string, string | null>): SourceClaims => ({kafka: {g: {digits: positions}}})

function isUserError(code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof UserError, `expected a UserError, got ${String(error)}`)
    assert.equal(error.code, code)
    return true
  }
}

let n = 0
const backends = [
  {name: 'a local folder', store: () => path.join(dir, `local-${n++}`)},
  {name: 'Cloud Storage (generation preconditions)', store: () => `gs://${BUCKET}/shared-${n++}`},
]

for (const backend of backends) {
  describe(`shared writers on ${backend.name}`, () => {
    it('two writers racing for the same version both land, nothing lost', async () => {
      const store = backend.store()
      const a = await DatasetStore.open(store, grey, rule, {shared: true})
      const b = await DatasetStore.open(store, grey, rule, {shared: true})
      // Both read the empty store; a commits version 1 first, so b's first try at version 1 fails
      // its precondition, and b re-reads, merges and lands as version 2.
      await a.writeShard('train', [await record(a, 1, '3'), await record(a, 2, '3')])
      await b.writeShard('train', [await record(b, 3, '7')])
      const uploadsBefore = gcs.requests.length
      const va = await a.commit(history, {sources: kafka({'0': '2'}), claims: claims({'0': null})})
      const vb = await b.commit(history, {sources: kafka({'1': '1'}), claims: claims({'1': null})})
      assert.ok(vb.version > va.version)
      // Racing for real, too: both commit at once, from the same view.
      await a.writeShard('validation', [await record(a, 4, '3')])
      await b.writeShard('test', [await record(b, 5, '7')])
      const [ra, rb] = await Promise.all([
        a.commit(history, {sources: kafka({'0': '3'}), claims: claims({'0': '2'})}),
        b.commit(history, {sources: kafka({'1': '2'}), claims: claims({'1': '1'})}),
      ])
      assert.notEqual(ra.version, rb.version)
      await a.close()
      await b.close()

      const manifest = await readManifest(store)
      assert.equal(manifest.version, Math.max(ra.version, rb.version))
      assert.equal(manifest.total, 5)
      assert.equal(manifest.shards.length, 4)
      assert.deepEqual(manifest.sources, kafka({'0': '3', '1': '2'}))
      assert.deepEqual(manifest.classes, ['3', '7'], 'class indices were agreed through the manifest')
      assert.deepEqual(manifest.counts.train, {'3': 2, '7': 1})
      // Every version is a complete manifest, and each shard is listed once with the version it landed in.
      assert.equal(new Set(manifest.shards.map((s) => s.file)).size, 4)
      for (const shard of manifest.shards) assert.ok(shard.addedIn >= 1 && shard.addedIn <= manifest.version)
      const expectedKeys = [1, 2, 3, 4, 5].map((i) => createHash('sha256').update(`img ${i}`).digest('hex'))
      assert.equal(manifest.fingerprint, createHash('sha256').update(expectedKeys.sort().join('\n')).digest('hex'))
      const train = await loadSplit(store, 'train')
      assert.deepEqual([...train.labels].sort(), [0, 0, 1])
      if (store.startsWith('gs://')) {
        // Versions are created with ifGenerationMatch=0, and at least one was refused (412) and retried.
        const creates = gcs.requests.slice(uploadsBefore).filter((r) => r.upload && /\/manifests\/v\d+\.json$/.test(String(r.query.name)))
        assert.ok(creates.length > 0 && creates.every((r) => r.query.ifGenerationMatch === '0'))
        assert.ok(creates.length > manifest.version, `${creates.length} creates for ${manifest.version} versions: a conflict was retried`)
      }
    })

    it('fences a zombie: its records for a partition another member recorded since are not published', async () => {
      const store = backend.store()
      const owner = await DatasetStore.open(store, grey, rule, {shared: true})
      await owner.writeShard('train', [await record(owner, 10, '1')])
      await owner.commit(history, {sources: kafka({'0': '5'}), claims: claims({'0': null})})
      // The zombie read partition 0 at 5, lost it in a rebalance it did not hear of, and the new
      // owner moved it to 9 meanwhile.
      const zombie = await DatasetStore.open(store, grey, rule, {shared: true})
      await zombie.writeShard('train', [await record(zombie, 11, '1')])
      await owner.writeShard('train', [await record(owner, 12, '1')])
      const moved = await owner.commit(history, {sources: kafka({'0': '9'}), claims: claims({'0': '5'})})
      await assert.rejects(zombie.commit(history, {sources: kafka({'0': '8'}), claims: claims({'0': '5'})}), isUserError('INGEST_FENCED'))
      await zombie.discard()
      await zombie.close()
      await owner.close()
      const manifest = await readManifest(store)
      assert.equal(manifest.version, moved.version, 'nothing was published for the zombie')
      assert.equal(manifest.total, 2)
      assert.deepEqual(manifest.sources, kafka({'0': '9'}))
    })
  })
}

describe('shared writers on a local folder', () => {
  it('tells a writer, before it closes its shards, which claimed partitions another writer recorded since', async () => {
    const store = path.join(dir, 'moved')
    const owner = await DatasetStore.open(store, grey, rule, {shared: true})
    const late = await DatasetStore.open(store, grey, rule, {shared: true})
    await owner.writeShard('train', [await record(owner, 40, 'a')])
    await owner.commit(history, {sources: kafka({'0': '5'}), claims: claims({'0': null})})
    assert.deepEqual(await late.movedClaims(claims({'0': null, '1': null})), [{group: 'g', topic: 'digits', partition: '0', claimed: null, recorded: '5'}])
    // Caught up: claiming what is recorded now passes, and its commit lands on top of the owner's.
    assert.deepEqual(await late.movedClaims(claims({'0': '5', '1': null})), [])
    await late.writeShard('train', [await record(late, 41, 'a')])
    const v = await late.commit(history, {sources: kafka({'0': '7', '1': '2'}), claims: claims({'0': '5', '1': null})})
    assert.deepEqual(v.sources, kafka({'0': '7', '1': '2'}))
    assert.equal(v.total, 2)
    await owner.close()
    await late.close()
  })

  it('readers follow committed versions past a manifest.json not yet replaced', async () => {
    const store = path.join(dir, 'follow')
    const writer = await DatasetStore.open(store, grey, rule, {shared: true})
    await writer.writeShard('train', [await record(writer, 20, 'a')])
    const v = await writer.commit(history)
    await writer.close()
    // A writer killed between creating manifests/v<N+1>.json (the commit) and replacing manifest.json.
    const next = {...v, version: v.version + 1, history: [...v.history, {...v.history.at(-1)!, version: v.version + 1}]}
    await writeFile(path.join(store, 'manifests', `v${String(v.version + 1).padStart(4, '0')}.json`), JSON.stringify(next))
    assert.equal((await readManifest(store)).version, v.version + 1)
    const reopened = await DatasetStore.open(store, grey, rule, {shared: true})
    assert.equal(reopened.version, v.version + 1)
    await reopened.close()
  })

  it('removes what a dead writer left, keeps a live writer\'s uncommitted shards', async () => {
    const store = path.join(dir, 'strays')
    const live = await DatasetStore.open(store, grey, rule, {shared: true})
    await live.writeShard('train', [await record(live, 30, 'a')])
    // A writer that died before committing: registered with a pid that is gone, one shard written.
    const child = spawn(process.execPath, ['-e', ''])
    await once(child, 'exit')
    await writeFile(path.join(store, 'writers', 'deadbeef'), `${child.pid} ${os.hostname()}\n`)
    await writeFile(path.join(store, 'shards', 'train-wdeadbeef-000000.tfrecord'), 'partial')
    await writeFile(path.join(store, 'shards', 'train-wdeadbeef-000000.keys'), 'k\n')
    const other = await DatasetStore.open(store, grey, rule, {shared: true})
    const shards = await readdir(path.join(store, 'shards'))
    assert.ok(!shards.some((name) => name.includes('deadbeef')), `dead writer's shards removed: ${shards.join(', ')}`)
    assert.ok(shards.some((name) => name.includes(`w${live.writerId}`)), 'the live writer\'s pending shard is kept')
    assert.deepEqual((await listNames(path.join(store, 'writers'))).sort(), [live.writerId, other.writerId].sort())
    await live.commit(history)
    await other.close()
    await live.close()
    assert.equal((await readManifest(store)).total, 1)
  })

  it('an exclusive writer and shared writers exclude each other', async () => {
    const store = path.join(dir, 'modes')
    await mkdir(store, {recursive: true})
    const shared = await DatasetStore.open(store, grey, rule, {shared: true})
    // Our own pid counts as running for registrations, so this process stands in for another one.
    await assert.rejects(DatasetStore.open(store, grey, rule), isUserError('DATASET_LOCKED'))
    await shared.close()
    const exclusive = await DatasetStore.open(store, grey, rule)
    await writeFile(path.join(store, '.lock'), `1 ${os.hostname()}-elsewhere\n`)
    await assert.rejects(DatasetStore.open(store, grey, rule, {shared: true}), isUserError('DATASET_LOCKED'))
    await exclusive.close()
  })
})
