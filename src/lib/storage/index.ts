// The one interface over storage locations: atomic writes, reads and listings. Only this module knows
// whether a path is local; gs:// URIs are routed here too (Cloud Storage support plugs in below).
import {randomBytes} from 'node:crypto'
import {mkdir, open, readdir, readFile, rename, rm, stat} from 'node:fs/promises'
import path from 'node:path'
import {UserError} from '../ui/errors.js'

export function isRemote(p: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(p)
}

function localOnly(p: string): string {
  if (isRemote(p)) {
    throw new UserError(`${p}: remote storage URIs are not supported by this build yet`, {
      code: 'STORAGE_UNSUPPORTED',
      exit: 'usage',
      suggestions: ['Use a local path.'],
    })
  }
  return p
}

export function joinPath(base: string, ...parts: string[]): string {
  return isRemote(base) ? [base.replace(/\/+$/, ''), ...parts].join('/') : path.join(base, ...parts)
}

/**
 * Writes a file so that readers see either the old content or the whole new one, never a part:
 * temp file in the same folder, fsync, rename.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  localOnly(file)
  await mkdir(path.dirname(file), {recursive: true})
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
  const handle = await open(temp, 'w')
  try {
    await handle.writeFile(data)
    await handle.sync()
  } finally {
    await handle.close()
  }
  try {
    await rename(temp, file)
  } catch (error) {
    await rm(temp, {force: true})
    throw error
  }
}

export async function readBytes(file: string): Promise<Buffer> {
  return readFile(localOnly(file))
}

export async function readText(file: string): Promise<string> {
  return readFile(localOnly(file), 'utf8')
}

export async function readJson<T>(file: string): Promise<T> {
  const text = await readText(file)
  try {
    return JSON.parse(text) as T
  } catch (error) {
    throw new UserError(`${file} is not valid JSON: ${(error as Error).message}`, {code: 'FILE_CORRUPT', exit: 'data', cause: error})
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(localOnly(p))
    return true
  } catch {
    return false
  }
}

export async function makeDir(dir: string): Promise<void> {
  await mkdir(localOnly(dir), {recursive: true})
}

/** Names of the entries directly in `dir` (empty when it does not exist). */
export async function listNames(dir: string): Promise<string[]> {
  try {
    return (await readdir(localOnly(dir))).sort()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
}

export async function remove(p: string): Promise<void> {
  await rm(localOnly(p), {recursive: true, force: true})
}

/** Replaces directory `target` with `staged` (a sibling) as close to atomically as a filesystem allows. */
export async function swapDir(staged: string, target: string): Promise<void> {
  const old = `${target}.old-${process.pid}`
  const had = await exists(target)
  if (had) await rename(target, old)
  await rename(staged, target)
  if (had) await rm(old, {recursive: true, force: true})
}
