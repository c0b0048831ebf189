// A `data.store` the user got wrong (a file, or a store this user may not read) is their mistake,
// told with the path and what to do (exit 2 or 3), not an internal error (exit 1).
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {once} from 'node:events'
import {chmod, mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {fileURLToPath} from 'node:url'
import type {ImageSpec} from '../../../src/lib/config/schema.js'
import {DatasetStore, readManifest} from '../../../src/lib/data/store.js'
import {UserError} from '../../../src/lib/errors.js'

const grey: ImageSpec = {width: 4, height: 3, channels: 1, fit: 'fill'}
const rule = {validation: 0.1, test: 0.1, seed: 0}
const storeModule = fileURLToPath(new URL('../../../src/lib/data/store.js', import.meta.url))

let root: string
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'ml-store-paths-'))
  // Traversable by the unprivileged user the EACCES case runs as (mkdtemp makes it 0700).
  await chmod(root, 0o755)
})
after(async () => {
  await rm(root, {recursive: true, force: true})
})

function isUserError(code: string, exitCode: number, ...patterns: RegExp[]) {
  return (error: unknown) => {
    assert.ok(error instanceof UserError, `expected a UserError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.equal(error.exitCode, exitCode)
    for (const pattern of patterns) assert.match(error.message, pattern)
    assert.ok(error.suggestions.some((s) => /data\.store/.test(s)), error.suggestions.join(' | '))
    return true
  }
}

const escaped = (s: string) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))

/**
 * readManifest(store) as a user who cannot read the manifest: an unprivileged uid when the tests
 * run as root (root reads any file), else this user after taking read permission away.
 */
async function readManifestDenied(store: string): Promise<{code: string; exitCode: number; message: string; suggestions: string[]}> {
  const asRoot = process.getuid?.() === 0
  await chmod(path.join(store, 'manifest.json'), asRoot ? 0o600 : 0o000)
  const script =
    `const {readManifest} = await import(${JSON.stringify(storeModule)});` +
    `try { await readManifest(${JSON.stringify(store)}); console.log('{}') }` +
    `catch (e) { console.log(JSON.stringify({code: e.code, exitCode: e.exitCode, message: e.message, suggestions: e.suggestions})) }`
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
    ...(asRoot ? {uid: 65534, gid: 65534} : {}),
  })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()))
  const [exit] = (await once(child, 'exit')) as [number]
  assert.equal(exit, 0)
  return JSON.parse(out)
}

describe('dataset store paths', () => {
  it('says that a data.store pointing at a file is not a folder, for reading (exit 2)', async () => {
    const file = path.join(root, 'not-a-store.txt')
    await writeFile(file, 'hello\n')
    await assert.rejects(readManifest(file), isUserError('DATASET_NOT_A_FOLDER', 2, escaped(file), /not a folder/))
  })

  it('says that a data.store pointing at a file is not a folder, for ingest (exit 2)', async () => {
    const file = path.join(root, 'also-a-file.txt')
    await writeFile(file, 'hello\n')
    await assert.rejects(DatasetStore.open(file, grey, rule), isUserError('DATASET_NOT_A_FOLDER', 2, escaped(file), /not a folder/))
  })

  it('says that a manifest this user may not read is a permission problem (exit 3)', async () => {
    const store = path.join(root, 'locked-store')
    await mkdir(store)
    await chmod(store, 0o755)
    await writeFile(path.join(store, 'manifest.json'), '{}\n')
    const error = await readManifestDenied(store)
    assert.equal(error.code, 'DATASET_UNREADABLE', error.message)
    assert.equal(error.exitCode, 3)
    assert.match(error.message, escaped(path.join(store, 'manifest.json')))
    assert.match(error.message, /permission denied/)
    assert.ok(error.suggestions.some((s) => /data\.store/.test(s) && /chmod/.test(s)))
  })
})
