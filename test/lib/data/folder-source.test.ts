// Tests of the folder source: labels from class folders, a fixed label, hidden entries, symlinks,
// sorted order, split passthrough, abort, counting and the error for a missing folder.
import assert from 'node:assert/strict'
import {mkdir, mkdtemp, rm, symlink, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import type {SourceConfig} from '../../../src/lib/config/schema.js'
import {countSource, openSource, TooLargeError, type SourceContext, type SourceItem} from '../../../src/lib/data/sources/index.js'
import {UserError} from '../../../src/lib/errors.js'

let dir: string

async function put(relative: string, content = relative): Promise<void> {
  const file = path.join(dir, relative)
  await mkdir(path.dirname(file), {recursive: true})
  await writeFile(file, content)
}

async function collect(source: SourceConfig, ctx: SourceContext = {baseDir: dir}): Promise<SourceItem[]> {
  const items: SourceItem[] = []
  for await (const item of openSource(source, ctx)) items.push(item)
  return items
}

const relative = (items: SourceItem[], root: string) => items.map((item) => path.relative(root, item.origin))

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'ml-folder-source-'))
  // Written out of order on purpose: the listing must not depend on creation order.
  await put('images/cat/b.png')
  await put('images/dog/z.png')
  await put('images/cat/a.png')
  await put('images/cat/deep/er/c.png')
  await put('images/dog/10.png')
  await put('images/dog/9.png')
  await put('images/loose.png')
  await put('images/.DS_Store')
  await put('images/cat/.hidden.png')
  await put('images/.cache/x.png')
  await put('images/dog/.thumbs/y.png')
  await put('flat/one.jpg')
  await put('flat/sub/two.jpg')
  await put('outside/linked.png', 'the target')
  await symlink(path.join(dir, 'outside/linked.png'), path.join(dir, 'images/dog/link.png'))
  await symlink(path.join(dir, 'outside'), path.join(dir, 'images/dog/linked-folder'))
  await symlink(path.join(dir, 'nowhere.png'), path.join(dir, 'images/dog/dangling.png'))
  await put('not-a-folder.txt')
})

after(async () => {
  await rm(dir, {recursive: true, force: true})
})

describe('folder source', () => {
  it('labels files by their top-level class folder, in sorted order, skipping hidden entries', async () => {
    const items = await collect({type: 'folder', path: 'images'})
    const root = path.join(dir, 'images')
    assert.deepEqual(relative(items, root), [
      'cat/a.png',
      'cat/b.png',
      'cat/deep/er/c.png',
      'dog/10.png',
      'dog/9.png',
      'dog/link.png',
      'dog/z.png',
      'loose.png',
    ])
    assert.deepEqual(items.map((item) => item.label), ['cat', 'cat', 'cat', 'dog', 'dog', 'dog', 'dog', undefined])
    assert.ok(items.every((item) => path.isAbsolute(item.origin)))
    assert.ok(items.every((item) => item.split === undefined))
  })

  it('reads file contents, and refuses a file over maxBytes before reading it', async () => {
    const items = await collect({type: 'folder', path: 'images'})
    const a = items[0]!
    assert.equal((await a.read()).toString(), 'images/cat/a.png')
    await assert.rejects(a.read(5), (error: unknown) => error instanceof TooLargeError && error.size === 'images/cat/a.png'.length)
  })

  it('does not follow a symlink to a file outside the source folder: the item carries the problem, its content is never read', async () => {
    const items = await collect({type: 'folder', path: 'images'})
    const link = items.find((item) => item.origin.endsWith('link.png'))!
    assert.equal(link.problem?.reason, 'outside-source')
    assert.doesNotMatch(link.problem!.detail, /the target/)
    await assert.rejects(link.read(), /links out of/)
  })

  it('follows a symlink to a file inside the source folder', async () => {
    await put('tree/cls/real.png', 'inside')
    await symlink(path.join(dir, 'tree/cls/real.png'), path.join(dir, 'tree/cls/alias.png'))
    const items = await collect({type: 'folder', path: 'tree'})
    assert.deepEqual(relative(items, path.join(dir, 'tree')), ['cls/alias.png', 'cls/real.png'])
    const alias = items[0]!
    assert.equal(alias.problem, undefined)
    assert.equal((await alias.read()).toString(), 'inside')
    await assert.rejects(alias.read(3), (error: unknown) => error instanceof TooLargeError && error.size === 'inside'.length)
  })

  it('gives every file under path the fixed label, nested ones included', async () => {
    const items = await collect({type: 'folder', path: 'flat', label: 'tree'})
    assert.deepEqual(relative(items, path.join(dir, 'flat')), ['one.jpg', 'sub/two.jpg'])
    assert.deepEqual(items.map((item) => item.label), ['tree', 'tree'])
  })

  it('passes the split through', async () => {
    const items = await collect({type: 'folder', path: 'flat', label: 'x', split: 'test'})
    assert.deepEqual(items.map((item) => item.split), ['test', 'test'])
  })

  it('resolves an absolute path regardless of baseDir', async () => {
    const items = await collect({type: 'folder', path: path.join(dir, 'flat'), label: 'x'}, {baseDir: '/somewhere/else'})
    assert.equal(items.length, 2)
  })

  it('lists the same order every time', async () => {
    const first = (await collect({type: 'folder', path: 'images'})).map((item) => item.origin)
    const second = (await collect({type: 'folder', path: 'images'})).map((item) => item.origin)
    assert.deepEqual(first, second)
  })

  it('counts what it would list', async () => {
    assert.equal(await countSource({type: 'folder', path: 'images'}, {baseDir: dir}), 8)
    assert.equal(await countSource({type: 'folder', path: 'flat', label: 'x'}, {baseDir: dir}), 2)
  })

  it('stops when the signal is aborted', async () => {
    const controller = new AbortController()
    const items: SourceItem[] = []
    for await (const item of openSource({type: 'folder', path: 'images'}, {baseDir: dir, signal: controller.signal})) {
      items.push(item)
      if (items.length === 2) controller.abort()
    }
    assert.equal(items.length, 2)
    assert.equal(await countSource({type: 'folder', path: 'images'}, {baseDir: dir, signal: controller.signal}), undefined)
  })

  it('throws SOURCE_NOT_FOUND (exit data) naming the path and key for a missing folder', async () => {
    await assert.rejects(collect({type: 'folder', path: 'missing'}, {baseDir: dir, index: 2}), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'SOURCE_NOT_FOUND')
      assert.equal(error.exitCode, 3)
      assert.match(error.message, /data\.sources\[2\]\.path/)
      assert.ok(error.message.includes(path.join(dir, 'missing')))
      return true
    })
    await assert.rejects(countSource({type: 'folder', path: 'missing'}, {baseDir: dir}), {code: 'SOURCE_NOT_FOUND'})
  })

  it('throws SOURCE_NOT_FOUND when path is a file', async () => {
    await assert.rejects(collect({type: 'folder', path: 'not-a-folder.txt'}), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'SOURCE_NOT_FOUND')
      assert.match(error.message, /not a folder/)
      return true
    })
  })

  it('rejects read() for a file removed after listing', async () => {
    await put('gone/k/file.png')
    const items = await collect({type: 'folder', path: 'gone'})
    await rm(path.join(dir, 'gone/k/file.png'))
    await assert.rejects(items[0]!.read(), {code: 'ENOENT'})
  })
})
