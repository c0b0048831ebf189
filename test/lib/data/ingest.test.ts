// End-to-end tests of `ml ingest` on real PNG files: quarantine, dedupe, idempotent re-runs,
// incremental ingests that keep old splits and class indices, and aborts that commit nothing.
import assert from 'node:assert/strict'
import {createHash} from 'node:crypto'
import {copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import sharp from 'sharp'
import {validateConfig} from '../../../src/lib/config/load.js'
import type {MlConfig} from '../../../src/lib/config/schema.js'
import {decodeToPixels} from '../../../src/lib/data/image.js'
import {runIngest, type IngestProgress} from '../../../src/lib/data/ingest.js'
import {loadSplit, readManifest} from '../../../src/lib/data/store.js'
import type {DatasetManifest} from '../../../src/lib/data/types.js'
import {UserError} from '../../../src/lib/errors.js'

const SIDE = 8

let root: string
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'ml-ingest-'))
})
after(async () => {
  await rm(root, {recursive: true, force: true})
})
let dirs = 0
async function workspace(): Promise<string> {
  const dir = path.join(root, `ws-${dirs++}`)
  await mkdir(dir, {recursive: true})
  return dir
}

/** A distinct greyscale image per (class, index), deterministic. */
function pixels(className: string, i: number): Buffer {
  const seed = createHash('sha256').update(`${className}/${i}`).digest()
  const out = Buffer.alloc(SIDE * SIDE)
  for (let j = 0; j < out.length; j++) out[j] = seed[j % seed.length]! ^ (j * 3)
  return out
}

/** Writes images/<class>/<i>.png and returns sha256(file) -> {class, pixels}. */
async function addImages(dir: string, className: string, indices: number[], known = new Map<string, {className: string; pixels: Buffer}>()) {
  await mkdir(path.join(dir, 'images', className), {recursive: true})
  for (const i of indices) {
    const raw = pixels(className, i)
    const png = await sharp(raw, {raw: {width: SIDE, height: SIDE, channels: 1}}).png().toBuffer()
    await writeFile(path.join(dir, 'images', className, `${i}.png`), png)
    known.set(createHash('sha256').update(png).digest('hex'), {className, pixels: raw})
  }
  return known
}

function configFor(extra: Record<string, unknown> = {}, sources: unknown[] = [{type: 'folder', path: 'images'}]): MlConfig {
  return validateConfig({
    data: {sources, store: 'store', image: {width: SIDE, height: SIDE, channels: 1}, shardSize: 4, concurrency: 3, ...extra},
  })
}

/** Every stored example as key -> {split, class name, pixels}. */
async function contents(storeDir: string, manifest: DatasetManifest) {
  const out = new Map<string, {split: string; className: string; pixels: Buffer}>()
  for (const split of ['train', 'validation', 'test'] as const) {
    const decoded = await loadSplit(storeDir, split, manifest)
    const frame = SIDE * SIDE
    decoded.keys.forEach((key, i) => {
      assert.ok(!out.has(key), `key ${key} stored twice`)
      out.set(key, {
        split,
        className: manifest.classes[decoded.labels[i]!]!,
        pixels: Buffer.from(decoded.pixels.subarray(i * frame, (i + 1) * frame)),
      })
    })
  }
  return out
}

describe('runIngest', () => {
  it('ingests a folder end to end, quarantines a corrupt file, drops a duplicate, and is idempotent', async () => {
    const dir = await workspace()
    const known = await addImages(dir, 'dog', [0, 1, 2, 3, 4, 5])
    await addImages(dir, 'cat', [0, 1, 2, 3, 4, 5], known)
    await addImages(dir, 'bird', [0, 1, 2, 3, 4, 5], known)
    await copyFile(path.join(dir, 'images', 'cat', '0.png'), path.join(dir, 'images', 'cat', 'copy.png'))
    const good = await readFile(path.join(dir, 'images', 'dog', '0.png'))
    await writeFile(path.join(dir, 'images', 'dog', 'broken.png'), good.subarray(0, 40))

    const progress: IngestProgress[] = []
    const summary = await runIngest({config: configFor(), baseDir: dir, onProgress: (p) => progress.push(p)})
    const storeDir = path.join(dir, 'store')
    assert.equal(summary.accepted, 18)
    assert.equal(summary.duplicates, 1)
    assert.equal(summary.rejected, 1)
    assert.equal(Object.values(summary.rejectedByReason).reduce((a, b) => a + b, 0), 1)
    assert.equal(summary.datasetVersion, 1)
    assert.equal(summary.total, 18)
    assert.equal(summary.classes, 3)
    assert.equal(summary.store, storeDir)
    assert.ok(summary.shards >= 5, `18 images in shards of 4 over up to 3 splits: ${summary.shards} shards`)
    assert.ok(progress.length > 0)
    assert.equal(progress.at(-1)!.seen, 20)
    assert.equal(progress.at(-1)!.total, 20)

    const manifest = await readManifest(storeDir)
    assert.deepEqual(manifest.classes, ['bird', 'cat', 'dog'])
    assert.deepEqual(summary.counts, manifest.counts)
    const stored = await contents(storeDir, manifest)
    assert.equal(stored.size, 18)
    for (const [key, value] of stored) {
      const expected = known.get(key)
      assert.ok(expected, `unknown key ${key}`)
      assert.equal(value.className, expected.className)
      assert.deepEqual(value.pixels, expected.pixels)
    }
    const quarantine = (await readFile(path.join(storeDir, 'quarantine.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l))
    assert.equal(quarantine.length, 1)
    assert.match(quarantine[0].origin, /broken\.png$/)

    const again = await runIngest({config: configFor(), baseDir: dir})
    assert.deepEqual([again.accepted, again.duplicates, again.rejected, again.shards], [0, 19, 1, 0])
    assert.equal(again.datasetVersion, 1)
    assert.deepEqual(await readManifest(storeDir), manifest)
    assert.equal((await readFile(path.join(storeDir, 'quarantine.jsonl'), 'utf8')).trim().split('\n').length, 1)
  })

  it('stores photo-size images (stored-block PNGs, written straight into the shard) with exactly the pixels the decoder gives', async () => {
    const dir = await workspace()
    const spec = {width: 80, height: 72, channels: 3 as const, fit: 'fill' as const}
    const files = new Map<string, Buffer>()
    for (const className of ['cat', 'dog']) {
      await mkdir(path.join(dir, 'images', className), {recursive: true})
      for (let i = 0; i < 3; i++) {
        const seed = createHash('sha256').update(`photo ${className} ${i}`).digest()
        const raw = Buffer.alloc(160 * 120 * 3)
        for (let j = 0; j < raw.length; j++) raw[j] = seed[j % seed.length]! ^ ((j * 7) & 0xff)
        const jpeg = await sharp(raw, {raw: {width: 160, height: 120, channels: 3}}).jpeg({quality: 90}).toBuffer()
        await writeFile(path.join(dir, 'images', className, `${i}.jpg`), jpeg)
        files.set(createHash('sha256').update(jpeg).digest('hex'), jpeg)
      }
    }
    const config = validateConfig({data: {sources: [{type: 'folder', path: 'images'}], store: 'store', image: spec, shardSize: 4, concurrency: 3}})
    const summary = await runIngest({config, baseDir: dir})
    assert.equal(summary.accepted, 6)
    const storeDir = path.join(dir, 'store')
    const manifest = await readManifest(storeDir)
    const frame = spec.width * spec.height * spec.channels
    let checked = 0
    for (const split of ['train', 'validation', 'test'] as const) {
      const decoded = await loadSplit(storeDir, split, manifest)
      for (const [i, key] of decoded.keys.entries()) {
        const expected = await decodeToPixels(files.get(key)!, spec, {maxPixels: 1e8, maxFileBytes: 1e8})
        assert.ok(expected.ok)
        assert.ok(Buffer.from(decoded.pixels.subarray(i * frame, (i + 1) * frame)).equals(Buffer.from(expected.pixels)), `pixels of ${key}`)
        checked++
      }
    }
    assert.equal(checked, 6)
  })

  it('quarantines a file over data.maxFileBytes as too-large and keeps every other image', async () => {
    const dir = await workspace()
    const known = await addImages(dir, 'dog', [0, 1, 2])
    await addImages(dir, 'cat', [0, 1, 2], known)
    // The 8x8 PNGs are a few hundred bytes; the huge file is one byte over the limit.
    const limit = 4096
    await writeFile(path.join(dir, 'images', 'cat', 'huge.png'), Buffer.alloc(limit + 1, 1))
    const summary = await runIngest({config: configFor({maxFileBytes: limit}), baseDir: dir})
    assert.deepEqual([summary.accepted, summary.rejected], [6, 1])
    assert.deepEqual(summary.rejectedByReason, {'too-large': 1})
    const quarantine = (await readFile(path.join(dir, 'store', 'quarantine.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l))
    assert.equal(quarantine.length, 1)
    assert.match(quarantine[0].origin, /huge\.png$/)
    assert.equal(quarantine[0].reason, 'too-large')
    assert.match(quarantine[0].detail, new RegExp(`^${limit + 1} bytes, data.maxFileBytes is ${limit}`))
    assert.equal((await contents(path.join(dir, 'store'), await readManifest(path.join(dir, 'store')))).size, 6)
  })

  it('adds only new files on a second ingest, keeping old splits and class indices', async () => {
    const dir = await workspace()
    const known = await addImages(dir, 'b', [0, 1, 2, 3, 4, 5, 6, 7])
    await addImages(dir, 'c', [0, 1, 2, 3, 4, 5, 6, 7], known)
    const storeDir = path.join(dir, 'store')
    await runIngest({config: configFor(), baseDir: dir})
    const v1 = await readManifest(storeDir)
    const before = await contents(storeDir, v1)

    await addImages(dir, 'a', [0, 1, 2], known)
    await addImages(dir, 'c', [8, 9], known)
    const summary = await runIngest({config: configFor(), baseDir: dir})
    assert.deepEqual([summary.accepted, summary.duplicates, summary.datasetVersion, summary.total], [5, 16, 2, 21])
    const v2 = await readManifest(storeDir)
    // A new class is appended: existing labels keep their index.
    assert.deepEqual(v2.classes, ['b', 'c', 'a'])
    assert.deepEqual(v2.shards.slice(0, v1.shards.length), v1.shards)
    assert.deepEqual(v2.history.map((h) => [h.version, h.accepted]), [[1, 16], [2, 5]])
    const after = await contents(storeDir, v2)
    assert.equal(after.size, 21)
    for (const [key, value] of before) assert.deepEqual(after.get(key), value, `example ${key} changed`)
    for (const [key, value] of after) assert.equal(value.className, known.get(key)!.className)
  })

  it('on abort commits nothing, removes its shards, and a later run completes', async () => {
    const dir = await workspace()
    await addImages(dir, 'x', [0, 1, 2, 3])
    const storeDir = path.join(dir, 'store')
    await runIngest({config: configFor(), baseDir: dir})
    const v1 = await readManifest(storeDir)
    const filesBefore = (await readdir(path.join(storeDir, 'shards'))).sort()

    await addImages(dir, 'y', Array.from({length: 30}, (_, i) => i))
    const controller = new AbortController()
    let shardsAtAbort = 0
    await assert.rejects(
      runIngest({
        config: configFor({shardSize: 2}),
        baseDir: dir,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.shards >= 1 && !controller.signal.aborted) {
            shardsAtAbort = p.shards
            controller.abort()
          }
        },
      }),
      (error: unknown) => error instanceof UserError && error.exitCode === 130 && error.code === 'INTERRUPTED',
    )
    assert.ok(shardsAtAbort >= 1, 'a shard was written before the abort')
    assert.deepEqual(await readManifest(storeDir), v1)
    assert.deepEqual((await readdir(path.join(storeDir, 'shards'))).sort(), filesBefore)

    const summary = await runIngest({config: configFor({shardSize: 2}), baseDir: dir})
    assert.equal(summary.accepted, 30)
    assert.equal(summary.datasetVersion, 2)
  })

  it('puts every image of a source with a fixed split into that split', async () => {
    const dir = await workspace()
    await addImages(dir, 'p', [0, 1, 2, 3, 4, 5])
    const summary = await runIngest({config: configFor({}, [{type: 'folder', path: 'images', split: 'test'}]), baseDir: dir})
    assert.deepEqual(summary.counts.test, {p: 6})
    assert.deepEqual(summary.counts.train, {p: 0})
  })

  it('fails with NO_IMAGES when nothing is usable and the store is empty', async () => {
    const dir = await workspace()
    await mkdir(path.join(dir, 'images', 'k'), {recursive: true})
    await writeFile(path.join(dir, 'images', 'k', 'junk.png'), 'not an image at all')
    await assert.rejects(runIngest({config: configFor(), baseDir: dir}), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'NO_IMAGES')
      assert.equal(error.exitCode, 3)
      assert.match(error.message, /images/)
      return true
    })
    await assert.rejects(readManifest(path.join(dir, 'store')), (error: unknown) => (error as UserError).code === 'DATASET_NOT_FOUND')
  })
})
