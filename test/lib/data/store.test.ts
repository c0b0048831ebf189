// Tests of the dataset store: commit visibility, clean-up of uncommitted work, versioning, spec
// checks, corruption detection and decoding splits back into pixels.
import assert from 'node:assert/strict'
import {createHash} from 'node:crypto'
import {mkdtemp, readFile, readdir, rm, stat, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {CRC32C} from '@google-cloud/storage'
import sharp from 'sharp'
import {DatasetStore, loadSplit, readManifest, readShard} from '../../../src/lib/data/store.js'
import type {ImageRecord} from '../../../src/lib/data/types.js'
import type {ImageSpec} from '../../../src/lib/config/schema.js'
import {UserError} from '../../../src/lib/errors.js'

const grey: ImageSpec = {width: 4, height: 3, channels: 1, fit: 'fill'}
const rgb: ImageSpec = {width: 2, height: 2, channels: 3, fit: 'fill'}
const rule = {validation: 0.1, test: 0.1, seed: 0}

let root: string
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'ml-store-'))
})
after(async () => {
  await rm(root, {recursive: true, force: true})
})
let n = 0
const freshDir = () => path.join(root, `store-${n++}`)

function pixelsFor(i: number, spec: ImageSpec): Uint8Array {
  const out = new Uint8Array(spec.width * spec.height * spec.channels)
  for (let j = 0; j < out.length; j++) out[j] = (i * 37 + j * 11) & 0xff
  return out
}

async function record(store: DatasetStore, i: number, className: string, spec: ImageSpec): Promise<ImageRecord> {
  const raw = pixelsFor(i, spec)
  const encoded = await sharp(raw, {raw: {width: spec.width, height: spec.height, channels: spec.channels}}).png().toBuffer()
  return {
    key: createHash('sha256').update(`img ${i}`).digest('hex'),
    label: store.classIndex(className),
    text: className,
    encoded,
    height: spec.height,
    width: spec.width,
    channels: spec.channels,
    origin: `img-${i}.png`,
  }
}

function isUserError(code: string, exitCode: number, pattern?: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof UserError, `expected a UserError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.equal(error.exitCode, exitCode)
    if (pattern) assert.match(error.message, pattern)
    return true
  }
}

describe('DatasetStore', () => {
  it('publishes shards only on commit', async () => {
    const dir = freshDir()
    const store = await DatasetStore.open(dir, grey, rule)
    store.registerClasses(['dog', 'cat'])
    assert.deepEqual(store.classes, ['cat', 'dog'])
    const train = [await record(store, 0, 'cat', grey), await record(store, 1, 'dog', grey), await record(store, 2, 'dog', grey)]
    const test = [await record(store, 3, 'cat', grey)]
    const shardA = await store.writeShard('train', train)
    await store.writeShard('test', test)
    await assert.rejects(readManifest(dir), isUserError('DATASET_NOT_FOUND', 3, /no dataset/))
    await assert.rejects(readManifest(dir), (error: unknown) => (error as UserError).suggestions.includes('run `ml ingest` first'))

    const manifest = await store.commit({accepted: 4, duplicates: 0, rejected: 0, sources: ['folder:images']})
    await store.close()
    assert.equal(manifest.version, 1)
    assert.equal(manifest.total, 4)
    assert.deepEqual(manifest.classes, ['cat', 'dog'])
    assert.deepEqual(manifest.counts, {train: {cat: 1, dog: 2}, validation: {cat: 0, dog: 0}, test: {cat: 1, dog: 0}})
    assert.equal(manifest.shards.length, 2)
    assert.deepEqual(manifest.history.map((h) => [h.version, h.accepted, h.sources]), [[1, 4, ['folder:images']]])
    const keys = [...train, ...test].map((r) => r.key).sort()
    assert.equal(manifest.fingerprint, createHash('sha256').update(keys.join('\n')).digest('hex'))
    assert.deepEqual(await readManifest(dir), manifest)
    assert.deepEqual(JSON.parse(await readFile(path.join(dir, 'manifests', 'v0001.json'), 'utf8')), manifest)
    assert.equal(shardA.addedIn, 1)
    assert.equal((await stat(path.join(dir, shardA.file))).size, shardA.bytes)

    const back: ImageRecord[] = []
    for await (const r of readShard(dir, manifest.shards[0]!)) back.push(r)
    assert.deepEqual(back.map((r) => [r.key, r.label, r.text, r.origin]), train.map((r) => [r.key, r.label, r.text, r.origin]))
    assert.deepEqual(Buffer.from(back[0]!.encoded), Buffer.from(train[0]!.encoded))
  })

  it('hides an uncommitted shard and deletes it on the next open; keeps class indices and keys', async () => {
    const dir = freshDir()
    const first = await DatasetStore.open(dir, grey, rule)
    first.registerClasses(['a', 'b'])
    const committed = await first.writeShard('train', [await record(first, 0, 'a', grey)])
    const v1 = await first.commit({accepted: 1, duplicates: 0, rejected: 0, sources: []})
    const uncommitted = await first.writeShard('train', [await record(first, 1, 'b', grey)])
    await first.close()
    // An interrupted run also leaves temp files behind.
    await writeFile(path.join(dir, 'manifest.json.tmp-99999'), '{')
    await writeFile(path.join(dir, 'shards', 'train-000002-00001.tfrecord.tmp-99999'), 'partial')

    assert.deepEqual(await readManifest(dir), v1)
    assert.ok((await readdir(path.join(dir, 'shards'))).includes(path.basename(uncommitted.file)))

    const second = await DatasetStore.open(dir, grey, rule)
    try {
      const origins = path.basename(committed.keysFile).replace(/\.keys$/, '.origins')
      assert.deepEqual((await readdir(path.join(dir, 'shards'))).sort(), [path.basename(committed.file), path.basename(committed.keysFile), origins].sort())
      assert.deepEqual(await readdir(dir).then((names) => names.filter((name) => name.includes('.tmp-'))), [])
      assert.equal(second.hasKey((await record(second, 0, 'a', grey)).key), true)
      assert.equal(second.hasKey((await record(second, 1, 'b', grey)).key), false)
      second.registerClasses(['c', 'b', 'a'])
      assert.deepEqual(second.classes, ['a', 'b', 'c'])
      assert.equal(second.classIndex('zebra'), 3)
    } finally {
      await second.close()
    }
  })

  it('does not bump the version when nothing was added', async () => {
    const dir = freshDir()
    const store = await DatasetStore.open(dir, grey, rule)
    store.registerClasses(['a'])
    await store.writeShard('validation', [await record(store, 0, 'a', grey)])
    const v1 = await store.commit({accepted: 1, duplicates: 0, rejected: 0, sources: []})
    await store.close()
    const text = await readFile(path.join(dir, 'manifest.json'), 'utf8')

    const again = await DatasetStore.open(dir, grey, rule)
    again.addQuarantine([{origin: 'bad.png', reason: 'corrupt', detail: 'x', at: 'now'}])
    const same = await again.commit({accepted: 0, duplicates: 1, rejected: 1, sources: []})
    await again.close()
    assert.equal(same.version, 1)
    assert.deepEqual(same, v1)
    assert.equal(await readFile(path.join(dir, 'manifest.json'), 'utf8'), text)
    assert.deepEqual(await readdir(path.join(dir, 'manifests')), ['v0001.json'])

    // The quarantine records a bad file once, however often it is re-ingested.
    const third = await DatasetStore.open(dir, grey, rule)
    third.addQuarantine([{origin: 'bad.png', reason: 'corrupt', detail: 'x', at: 'later'}])
    await third.commit({accepted: 0, duplicates: 1, rejected: 1, sources: []})
    await third.close()
    const lines = (await readFile(path.join(dir, 'quarantine.jsonl'), 'utf8')).trim().split('\n')
    assert.equal(lines.length, 1)
    assert.equal(JSON.parse(lines[0]!).origin, 'bad.png')
  })

  it('refuses another image spec or split rule', async () => {
    const dir = freshDir()
    const store = await DatasetStore.open(dir, grey, rule)
    store.registerClasses(['a'])
    await store.writeShard('train', [await record(store, 0, 'a', grey)])
    await store.commit({accepted: 1, duplicates: 0, rejected: 0, sources: []})
    await store.close()
    await assert.rejects(DatasetStore.open(dir, {...grey, width: 8}, rule), isUserError('DATASET_SPEC_MISMATCH', 2, /width 4 vs 8/))
    await assert.rejects(DatasetStore.open(dir, {...grey, channels: 3}, rule), (error: unknown) =>
      (error as UserError).suggestions.some((s) => /data\.store/.test(s) && /delete/.test(s)),
    )
    await assert.rejects(DatasetStore.open(dir, grey, {...rule, test: 0.2}), isUserError('DATASET_SPEC_MISMATCH', 2, /split/))
    // A failed open does not leave the store locked.
    await (await DatasetStore.open(dir, grey, rule)).close()
  })

  it('refuses a store another live process is writing', async () => {
    const dir = freshDir()
    await (await DatasetStore.open(dir, grey, rule)).close()
    await writeFile(path.join(dir, '.lock'), `${process.ppid}\n`)
    await assert.rejects(DatasetStore.open(dir, grey, rule), isUserError('DATASET_LOCKED', 2))
    // A lock left by a process that no longer exists is taken over.
    await writeFile(path.join(dir, '.lock'), '2147483646\n')
    await (await DatasetStore.open(dir, grey, rule)).close()
  })

  it('readShard detects a damaged or truncated shard and names it', async () => {
    const dir = freshDir()
    const store = await DatasetStore.open(dir, grey, rule)
    store.registerClasses(['a'])
    const records = await Promise.all([0, 1, 2].map((i) => record(store, i, 'a', grey)))
    const shard = await store.writeShard('train', records)
    await store.commit({accepted: 3, duplicates: 0, rejected: 0, sources: []})
    await store.close()
    const file = path.join(dir, shard.file)
    const good = await readFile(file)
    /** Reads every record of `described` (the shard as some manifest describes it); returns the count. */
    const drain = async (described = shard) => {
      let n = 0
      for await (const _ of readShard(dir, described)) n++
      return n
    }
    const flipped = Buffer.from(good)
    flipped[Math.floor(flipped.length / 2)]! ^= 1
    await writeFile(file, flipped)
    await assert.rejects(drain, isUserError('DATASET_CORRUPT', 3, new RegExp(`${shard.file}.*crc32c`)))
    // A shard from a manifest written before crc32c carries a sha256, which is still checked.
    const older = {...shard, crc32c: undefined, sha256: createHash('sha256').update(good).digest('hex')}
    await assert.rejects(drain(older), isUserError('DATASET_CORRUPT', 3, new RegExp(`${shard.file}.*sha256`)))
    await writeFile(file, good)
    assert.equal(await drain(older), 3)
    await assert.rejects(drain({...shard, crc32c: undefined}), isUserError('DATASET_CORRUPT', 3, /no checksum/))
    await writeFile(file, good.subarray(0, good.length - 3))
    await assert.rejects(drain, isUserError('DATASET_CORRUPT', 3, new RegExp(`${shard.file}.*bytes`)))
    await rm(file)
    await assert.rejects(drain, isUserError('DATASET_CORRUPT', 3, /missing/))
    await assert.rejects(loadSplit(dir, 'train'), isUserError('DATASET_CORRUPT', 3))
  })

  it('streams a shard through its write buffer: records across many refills and one larger than the buffer', async () => {
    const dir = freshDir()
    const store = await DatasetStore.open(dir, grey, rule)
    store.registerClasses(['a'])
    // PNG bytes are opaque to the writer: sizes from 10 bytes to 3 MB (over its 2 MB buffer) in a
    // seeded order, so that records straddle every refill and the large one forces a bigger buffer.
    const sizes = [10, 700_000, 900_000, 3_000_000, 5, 1_500_000, 400_000, 2_097_152, 64]
    const records = await Promise.all(sizes.map(async (size, i) => {
      const r = await record(store, i, 'a', grey)
      const bytes = new Uint8Array(size)
      for (let j = 0; j < size; j++) bytes[j] = (j * 31 + i) & 0xff
      return {...r, encoded: bytes}
    }))
    const shard = store.openShard('train')
    for (const r of records) await shard.append(r)
    // The buffer is reused once written, so an append while another is in flight is refused.
    const first = shard.append(records[0]!)
    const overlapping = [shard.append(records[1]!), shard.close()]
    for (const call of overlapping) await assert.rejects(call, /previous append has not settled/)
    await first
    const info = await shard.close()
    await store.commit({accepted: records.length, duplicates: 0, rejected: 0, sources: []})
    await store.close()
    const file = await readFile(path.join(dir, info.file))
    assert.equal(info.bytes, file.length)
    // The value Cloud Storage reports for the same bytes (its client's own CRC-32C).
    const gcsCrc = new CRC32C()
    gcsCrc.update(file)
    assert.equal(info.crc32c, gcsCrc.toString())
    const back: ImageRecord[] = []
    for await (const r of readShard(dir, info)) back.push(r)
    records.push(records[0]!)
    assert.equal(back.length, records.length)
    for (const [i, r] of back.entries()) {
      assert.equal(r.key, records[i]!.key)
      assert.ok(Buffer.from(r.encoded).equals(Buffer.from(records[i]!.encoded)), `record ${i} (${sizes[i]} bytes) differs`)
    }
  })

  for (const spec of [grey, rgb]) {
    it(`loadSplit returns the stored pixels (${spec.channels} channel${spec.channels === 1 ? '' : 's'})`, async () => {
      const dir = freshDir()
      const store = await DatasetStore.open(dir, spec, rule)
      store.registerClasses(['x', 'y'])
      const records = await Promise.all([0, 1, 2, 3, 4].map((i) => record(store, i, i % 2 === 0 ? 'x' : 'y', spec)))
      await store.writeShard('train', records.slice(0, 3))
      await store.writeShard('train', records.slice(3))
      await store.writeShard('test', [await record(store, 9, 'y', spec)])
      await store.commit({accepted: 6, duplicates: 0, rejected: 0, sources: []})
      await store.close()

      const decoded = await loadSplit(dir, 'train')
      assert.equal(decoded.count, 5)
      assert.deepEqual([decoded.height, decoded.width, decoded.channels], [spec.height, spec.width, spec.channels])
      const expected = Buffer.concat([0, 1, 2, 3, 4].map((i) => pixelsFor(i, spec)))
      assert.deepEqual(Buffer.from(decoded.pixels), expected)
      assert.deepEqual([...decoded.labels], [0, 1, 0, 1, 0])
      assert.deepEqual(decoded.keys, records.map((r) => r.key))
      const test = await loadSplit(dir, 'test')
      assert.deepEqual(Buffer.from(test.pixels), Buffer.from(pixelsFor(9, spec)))
      const validation = await loadSplit(dir, 'validation')
      assert.equal(validation.count, 0)
      assert.equal(validation.pixels.length, 0)
    })
  }

  it('loadSplit falls back to sharp for a PNG of another size', async () => {
    const dir = freshDir()
    const store = await DatasetStore.open(dir, grey, rule)
    store.registerClasses(['a'])
    const r = await record(store, 0, 'a', grey)
    // A uniform 8x6 image: any resize to 4x3 gives the same uniform value.
    r.encoded = await sharp(Buffer.alloc(48, 200), {raw: {width: 8, height: 6, channels: 1}}).png().toBuffer()
    await store.writeShard('train', [r])
    await store.commit({accepted: 1, duplicates: 0, rejected: 0, sources: []})
    await store.close()
    const decoded = await loadSplit(dir, 'train')
    assert.deepEqual([...decoded.pixels], new Array(12).fill(200))
  })
})
