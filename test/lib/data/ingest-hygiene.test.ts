// What ingest tells about what it set aside: links out of the source folder are not followed, no
// file content ever reaches quarantine.jsonl, a PNG cut short is called truncated, and dropped
// duplicates are listed with the file each duplicates.
import assert from 'node:assert/strict'
import {mkdir, mkdtemp, readFile, rm, symlink, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import sharp from 'sharp'
import {validateConfig} from '../../../src/lib/config/load.js'
import {normaliseImage} from '../../../src/lib/data/image.js'
import {runIngest} from '../../../src/lib/data/ingest.js'

const SIDE = 8
const GREY = {width: SIDE, height: SIDE, channels: 1 as const, fit: 'fill' as const}
const LIMITS = {maxPixels: 1 << 24, maxFileBytes: 1 << 20}

let root: string
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'ml-ingest-hygiene-'))
})
after(async () => {
  await rm(root, {recursive: true, force: true})
})

async function png(seed: number, side = SIDE): Promise<Buffer> {
  const raw = Buffer.alloc(side * side)
  for (let i = 0; i < raw.length; i++) raw[i] = (seed * 31 + i * 7) & 0xff
  return sharp(raw, {raw: {width: side, height: side, channels: 1}}).png().toBuffer()
}

async function quarantine(store: string): Promise<Array<{origin: string; reason: string; detail: string}>> {
  const text = await readFile(path.join(store, 'quarantine.jsonl'), 'utf8')
  return text.trim().split('\n').map((line) => JSON.parse(line))
}

describe('ingest hygiene', () => {
  it('calls a PNG cut short truncated, on both decode paths', async () => {
    const whole = await png(1, 64)
    const cut = whole.subarray(0, whole.length - 20)
    for (const fastPath of [true, false]) {
      const result = await normaliseImage(cut, {...GREY, width: 64, height: 64}, LIMITS, {fastPath})
      assert.equal(result.ok, false)
      assert.ok(!result.ok && result.reason === 'corrupt')
      assert.match(!result.ok ? result.detail : '', /^png could not be decoded: truncated, the file ends inside its IDAT chunk/)
    }
  })

  it('neither follows a link out of the source folder nor copies file contents into quarantine.jsonl', async () => {
    const dir = path.join(root, 'contents')
    const secret = path.join(dir, 'elsewhere', 'passwd')
    await mkdir(path.dirname(secret), {recursive: true})
    await writeFile(secret, 'root:x:0:0:root:/root:/bin/bash\n')
    await mkdir(path.join(dir, 'images', 'a'), {recursive: true})
    await writeFile(path.join(dir, 'images', 'a', 'good.png'), await png(1))
    await symlink(secret, path.join(dir, 'images', 'a', 'passwd.png'))
    await writeFile(path.join(dir, 'images', 'a', 'notes.png'), 'api-token=s3cr3t\n')
    const store = path.join(dir, 'store')
    const summary = await runIngest({
      config: validateConfig({data: {sources: [{type: 'folder', path: 'images'}], store, image: GREY, concurrency: 2}}),
      baseDir: dir,
    })
    assert.equal(summary.accepted, 1)
    assert.deepEqual(summary.rejectedByReason, {'outside-source': 1, 'unsupported-format': 1})
    const text = await readFile(path.join(store, 'quarantine.jsonl'), 'utf8')
    assert.doesNotMatch(text, /root:x:0/)
    assert.doesNotMatch(text, /s3cr3t|api-token/)
    const entries = await quarantine(store)
    assert.deepEqual(entries.map((e) => [path.basename(e.origin), e.reason]).sort(), [
      ['notes.png', 'unsupported-format'],
      ['passwd.png', 'outside-source'],
    ])
  })

  it('lists dropped duplicates with the file each duplicates, in this run and against stored images, once', async () => {
    const dir = path.join(root, 'duplicates')
    const images = path.join(dir, 'images')
    await mkdir(path.join(images, 'a'), {recursive: true})
    await mkdir(path.join(images, 'b'), {recursive: true})
    const one = await png(1)
    await writeFile(path.join(images, 'a', '1.png'), one)
    await writeFile(path.join(images, 'a', '2.png'), await png(2))
    await writeFile(path.join(images, 'b', 'copy-of-1.png'), one)
    const store = path.join(dir, 'store')
    const config = validateConfig({data: {sources: [{type: 'folder', path: 'images'}], store, image: GREY, concurrency: 2}})
    const first = await runIngest({config, baseDir: dir})
    assert.equal(first.duplicates, 1)
    const listed = async () =>
      (await readFile(path.join(store, 'duplicates.jsonl'), 'utf8'))
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as {origin: string; duplicateOf?: string; key: string})
        .map((e) => [path.relative(images, e.origin), e.duplicateOf && path.relative(images, e.duplicateOf)])
    assert.deepEqual(await listed(), [['b/copy-of-1.png', 'a/1.png']])

    // A later copy of a stored image names the stored file; files that are themselves stored are not listed.
    await writeFile(path.join(images, 'b', 'later-copy-of-2.png'), await png(2))
    const second = await runIngest({config, baseDir: dir})
    assert.deepEqual([second.accepted, second.duplicates], [0, 4])
    assert.deepEqual(await listed(), [
      ['b/copy-of-1.png', 'a/1.png'],
      ['b/later-copy-of-2.png', 'a/2.png'],
    ])
    const third = await runIngest({config, baseDir: dir})
    assert.equal(third.duplicates, 4)
    assert.equal((await listed()).length, 2)
  })
})
