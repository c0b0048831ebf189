// The one interface over storage locations: atomic writes, reads and listings. Only this module knows
// whether a path is local or a gs:// object (Cloud Storage, in gcs.ts); other URI schemes are refused.
import {randomBytes} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {appendFile, copyFile, link, mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, unlink} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type {Readable} from 'node:stream'
import {UserError} from '../errors.js'

export function isRemote(p: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(p)
}

const isGs = (p: string) => p.startsWith('gs://')

/** True for Cloud Storage paths: the only ones a job on Google Cloud (Vertex AI) can read or write. */
export const isCloudStorage = (p: string) => isGs(p)

/** The Cloud Storage backend, loaded only when a gs:// path is first used. */
const gcs = () => import('./gcs.js')

/** Routes a path: 'gs' for Cloud Storage, 'local' for the file system; other URI schemes are refused. */
function backend(p: string): 'gs' | 'local' {
  if (isGs(p)) return 'gs'
  if (isRemote(p)) {
    throw new UserError(`${p}: ${p.split(':')[0]}:// storage is not supported (only local paths and gs://)`, {
      code: 'STORAGE_UNSUPPORTED',
      exit: 'usage',
      suggestions: ['Use a local path or a gs://bucket/path URI.'],
    })
  }
  return 'local'
}

export function joinPath(base: string, ...parts: string[]): string {
  return isRemote(base) ? [base.replace(/\/+$/, ''), ...parts].join('/') : path.join(base, ...parts)
}

/** An absolute form of `p`: local paths are resolved against the working directory, URIs kept. */
export function resolveLocation(p: string): string {
  return isRemote(p) ? p.replace(/\/+$/, '') : path.resolve(p)
}

/** The folder holding `p` (for a URI, the prefix before its last segment). */
export function parentOf(p: string): string {
  if (!isRemote(p)) return path.dirname(p)
  const trimmed = p.replace(/\/+$/, '')
  const cut = trimmed.lastIndexOf('/')
  return cut > trimmed.indexOf('://') + 2 ? trimmed.slice(0, cut) : trimmed
}

/** The last segment of a path or URI. */
export function baseName(p: string): string {
  return isRemote(p) ? (p.replace(/\/+$/, '').split('/').at(-1) ?? '') : path.basename(p)
}

/** Options of a write; both are create-or-compare-and-swap checks, see writeFileAtomic. */
export interface WriteOptions {
  /** Fail with code EEXIST when the file exists. */
  createOnly?: boolean
  /**
   * Fail with code ECONFLICT unless the file is still at this revision (from readVersioned). On
   * Cloud Storage this is a generation precondition and exact; on a local disk it is checked just
   * before the rename, so concurrent local writers must still hold a lock.
   */
  ifRevision?: string
}

/** Error codes of the storage layer, the same for every backend (those of node:fs where one exists). */
export function errorCode(error: unknown): 'ENOENT' | 'EEXIST' | 'ECONFLICT' | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOENT' || code === 'EEXIST' || code === 'ECONFLICT' ? code : undefined
}

const conflict = (file: string) => Object.assign(new Error(`${file} was changed by another writer`), {code: 'ECONFLICT'})

async function localRevision(file: string): Promise<string | undefined> {
  try {
    const s = await stat(file)
    return `${s.ino}:${s.size}:${s.mtimeMs}`
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/** Makes a rename durable; some platforms cannot fsync a directory, which is fine. */
async function fsyncDir(dir: string): Promise<void> {
  let handle
  try {
    handle = await open(dir, 'r')
    await handle.sync()
  } catch {
    // Best effort only.
  } finally {
    await handle?.close().catch(() => {})
  }
}

const tempName = (file: string) => `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`

/** Moves a finished temp file into place, honouring the write options; returns the new revision. */
async function publishLocal(temp: string, file: string, options: WriteOptions): Promise<string> {
  try {
    if (options.createOnly) {
      // link() fails when the name exists, and unlike open('wx') never shows a half-written file.
      // File systems without hard links get open('wx'), exclusive but briefly partial.
      const linked = await link(temp, file).then(
        () => true,
        (error: NodeJS.ErrnoException) => {
          if (error.code === 'EEXIST') throw Object.assign(new Error(`${file} already exists`), {code: 'EEXIST'})
          if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV'].includes(error.code ?? '')) throw error
          return false
        },
      )
      if (!linked) {
        const handle = await open(file, 'wx').catch((error: NodeJS.ErrnoException) => {
          throw error.code === 'EEXIST' ? Object.assign(new Error(`${file} already exists`), {code: 'EEXIST'}) : error
        })
        try {
          await handle.writeFile(await readFile(temp))
          await handle.sync()
        } finally {
          await handle.close()
        }
      }
      await unlink(temp)
    } else {
      if (options.ifRevision !== undefined && (await localRevision(file)) !== options.ifRevision) throw conflict(file)
      await rename(temp, file)
    }
  } catch (error) {
    await rm(temp, {force: true})
    throw error
  }
  await fsyncDir(path.dirname(file))
  return (await localRevision(file)) ?? ''
}

/**
 * Writes a file so that readers see either the old content or the whole new one, never a part:
 * locally a temp file in the same folder, fsync, rename; on Cloud Storage one upload (objects are
 * replaced atomically). Returns the file's new revision (see readVersioned).
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, options: WriteOptions = {}): Promise<string> {
  if (backend(file) === 'gs') return (await gcs()).gcsWrite(file, data, {createOnly: options.createOnly, ifGeneration: options.ifRevision})
  await mkdir(path.dirname(file), {recursive: true})
  const temp = tempName(file)
  const handle = await open(temp, 'w')
  try {
    await handle.writeFile(data)
    await handle.sync()
  } catch (error) {
    await handle.close()
    await rm(temp, {force: true})
    throw error
  }
  await handle.close()
  return publishLocal(temp, file, options)
}

/** Writes a file piece by piece; nothing is visible under its name before commit(). */
export interface FileWriter {
  /**
   * Writes `chunk` after what was written before. The promise settles once the bytes are in the
   * file, so the caller may then reuse the buffer.
   */
  write(chunk: Uint8Array): Promise<void>
  /** Publishes the file (atomically, like writeFileAtomic) and returns its revision. */
  commit(options?: WriteOptions): Promise<string>
  /** Drops what was written. */
  abort(): Promise<void>
}

/** A local FileWriter starts an fdatasync in the background each time this much more was written. */
const SYNC_EVERY_BYTES = 8 << 20

/**
 * Opens a FileWriter for `file`. Locally the data goes to a temp file beside it; for Cloud Storage it
 * is spooled to a local temp file and uploaded on commit (resumable above 8 MiB), which keeps memory
 * flat and lets a failed upload be retried from the start.
 */
export async function createWriter(file: string): Promise<FileWriter> {
  const remote = backend(file) === 'gs'
  let spoolDir: string | undefined
  let temp: string
  if (remote) {
    spoolDir = await mkdtemp(path.join(os.tmpdir(), 'ml-upload-'))
    temp = path.join(spoolDir, 'data')
  } else {
    await mkdir(path.dirname(file), {recursive: true})
    temp = tempName(file)
  }
  // A file handle rather than a write stream: a write settles when its bytes are written (a
  // stream's may settle while the chunk still waits in its queue), which lets callers reuse buffers.
  const handle = await open(temp, 'w')
  let position = 0
  let closed = false
  // A local file is flushed to disk as it grows, in the background (RocksDB's bytes_per_sync):
  // the final fsync then has little left to write, instead of the whole file at once (~40 ms per
  // 60 MB here, with the ingest waiting on it), and the page cache holds less dirty data.
  let unsynced = 0
  let syncing: Promise<void> | undefined
  // Kept for commit: once one fsync has reported a write-back error, Linux need not report it again.
  let syncError: unknown
  const syncInBackground = () => {
    if (remote || syncing !== undefined || unsynced < SYNC_EVERY_BYTES) return
    unsynced = 0
    syncing = handle
      .datasync()
      .catch((error: unknown) => {
        syncError ??= error
      })
      .finally(() => {
        syncing = undefined
      })
  }
  const close = async () => {
    if (closed) return
    closed = true
    await syncing
    await handle.close()
  }
  const cleanup = async () => {
    if (spoolDir) await rm(spoolDir, {recursive: true, force: true})
    else await rm(temp, {force: true})
  }
  return {
    async write(chunk) {
      // Positions are taken in call order, so concurrent writes still land one after another.
      let at = position
      position += chunk.length
      for (let done = 0; done < chunk.length; ) {
        const {bytesWritten} = await handle.write(chunk, done, chunk.length - done, at)
        done += bytesWritten
        at += bytesWritten
      }
      unsynced += chunk.length
      syncInBackground()
    },
    async commit(options = {}) {
      try {
        if (!remote) {
          await syncing
          if (syncError !== undefined) throw syncError
          await handle.sync()
        }
        await close()
        if (!remote) return await publishLocal(temp, file, options)
        return await (await gcs()).gcsUploadFile(temp, file, {createOnly: options.createOnly, ifGeneration: options.ifRevision})
      } finally {
        if (remote) await cleanup()
      }
    },
    async abort() {
      await close().catch(() => {})
      await cleanup()
    },
  }
}

export async function readBytes(file: string): Promise<Buffer> {
  if (backend(file) === 'gs') return (await gcs()).gcsRead(file)
  return readFile(file)
}

export async function readText(file: string): Promise<string> {
  return (await readBytes(file)).toString('utf8')
}

/** Reads a file with its revision, for a later `writeFileAtomic(..., {ifRevision})`; undefined when missing. */
export async function readVersioned(file: string): Promise<{data: Buffer; revision: string} | undefined> {
  if (backend(file) === 'gs') {
    const result = await (await gcs()).gcsReadVersioned(file)
    return result && {data: result.data, revision: result.generation}
  }
  const revision = await localRevision(file)
  if (revision === undefined) return undefined
  try {
    return {data: await readFile(file), revision}
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/** Size in bytes of a file, or undefined when it does not exist. */
export async function fileSize(file: string): Promise<number | undefined> {
  if (backend(file) === 'gs') return (await (await gcs()).gcsStat(file))?.size
  try {
    return (await stat(file)).size
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/** A readable stream of a file's bytes (streamed from Cloud Storage for gs://). */
export async function openRead(file: string, options: {highWaterMark?: number} = {}): Promise<Readable> {
  if (backend(file) === 'gs') return (await gcs()).gcsReadStream(file)
  return createReadStream(file, options)
}

/**
 * A local path holding the file's bytes, for code that needs random access (big shards): the file
 * itself, or a downloaded temp copy that release() deletes.
 */
export async function localCopy(file: string): Promise<{path: string; release(): Promise<void>}> {
  if (backend(file) === 'local') return {path: file, release: async () => {}}
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-download-'))
  const local = path.join(dir, baseName(file) || 'data')
  try {
    await (await gcs()).gcsDownloadTo(file, local)
  } catch (error) {
    await rm(dir, {recursive: true, force: true})
    throw error
  }
  return {path: local, release: () => rm(dir, {recursive: true, force: true})}
}

/**
 * Appends text to a file (created if missing). On Cloud Storage, where objects cannot be appended
 * to, the object is rewritten with a generation precondition and retried when another writer won.
 */
export async function appendText(file: string, text: string): Promise<void> {
  if (backend(file) === 'local') {
    await appendFile(file, text)
    return
  }
  for (let attempt = 0; ; attempt++) {
    const current = await readVersioned(file)
    const data = current ? Buffer.concat([current.data, Buffer.from(text)]) : text
    try {
      await writeFileAtomic(file, data, current ? {ifRevision: current.revision} : {createOnly: true})
      return
    } catch (error) {
      if (attempt >= 10 || (errorCode(error) !== 'ECONFLICT' && errorCode(error) !== 'EEXIST')) throw error
    }
  }
}

export async function readJson<T>(file: string): Promise<T> {
  const text = await readText(file)
  try {
    return JSON.parse(text) as T
  } catch (error) {
    throw new UserError(`${file} is not valid JSON: ${(error as Error).message}`, {code: 'FILE_CORRUPT', exit: 'data', cause: error})
  }
}

/** True when `p` exists: a file, a folder, or (on Cloud Storage) an object or a prefix with objects under it. */
export async function exists(p: string): Promise<boolean> {
  if (backend(p) === 'gs') return (await gcs()).gcsExists(p)
  try {
    await stat(p)
    return true
  } catch {
    return false
  }
}

/** Creates a folder (and its parents); a no-op on Cloud Storage, where folders are only name prefixes. */
export async function makeDir(dir: string): Promise<void> {
  if (backend(dir) === 'gs') return
  await mkdir(dir, {recursive: true})
}

/** Names of the entries directly in `dir` (empty when it does not exist). */
export async function listNames(dir: string): Promise<string[]> {
  if (backend(dir) === 'gs') return (await gcs()).gcsListNames(dir)
  try {
    return (await readdir(dir)).sort()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
}

export interface Entry {
  name: string
  kind: 'file' | 'folder'
  /** Bytes, for files. */
  size?: number
}

/** Entries directly in `dir`, sorted by name, with their kind (empty when it does not exist). */
export async function listEntries(dir: string): Promise<Entry[]> {
  if (backend(dir) === 'gs') return (await gcs()).gcsListEntries(dir)
  const entries: Entry[] = []
  for (const name of await listNames(dir)) {
    const s = await stat(path.join(dir, name)).catch(() => undefined)
    if (s?.isDirectory()) entries.push({name, kind: 'folder'})
    else if (s?.isFile()) entries.push({name, kind: 'file', size: s.size})
  }
  return entries
}

/**
 * Every file under `dir` (recursively), in name order, streamed: a bucket prefix with millions of
 * objects is listed page by page. Paths are full paths (gs:// URIs for Cloud Storage).
 */
export async function* walkFiles(dir: string): AsyncGenerator<{path: string; size: number}> {
  if (backend(dir) === 'gs') {
    const {gcsWalk, parseGsUri} = await gcs()
    const {bucket, key} = parseGsUri(dir)
    for await (const object of gcsWalk(bucket, key ? `${key}/` : '')) {
      // Zero-byte "folder" placeholders that some tools create are not files.
      if (!object.name.endsWith('/')) yield {path: `gs://${bucket}/${object.name}`, size: object.size}
    }
    return
  }
  for (const entry of await listEntries(dir)) {
    const full = path.join(dir, entry.name)
    if (entry.kind === 'folder') yield* walkFiles(full)
    else yield {path: full, size: entry.size ?? 0}
  }
}

/**
 * Copies every file under `dir` (a local folder or a gs:// prefix) into the local folder `into`,
 * keeping relative paths; returns their number. A name that would land outside `into` (a `..`
 * segment in an object name) is refused.
 */
export async function downloadDir(dir: string, into: string): Promise<number> {
  const root = resolveLocation(dir)
  let count = 0
  for await (const file of walkFiles(root)) {
    const relative = file.path.slice(root.length + 1)
    const target = path.resolve(into, ...relative.split('/'))
    if (!target.startsWith(path.resolve(into) + path.sep)) throw new Error(`${file.path}: name leads outside the folder it is copied to`)
    await mkdir(path.dirname(target), {recursive: true})
    if (backend(file.path) === 'gs') await (await gcs()).gcsDownloadTo(file.path, target)
    else await copyFile(file.path, target)
    count++
  }
  return count
}

/** Deletes a file or a folder with everything in it; a missing one is fine. */
export async function remove(p: string): Promise<void> {
  if (backend(p) === 'gs') return (await gcs()).gcsRemove(p)
  await rm(p, {recursive: true, force: true})
}

/**
 * Replaces directory `target` with `staged` (a sibling) as close to atomically as the storage allows:
 * two renames locally; on Cloud Storage, which has no rename, a server-side copy of each object
 * (data before JSON metadata) and then deletes.
 */
export async function swapDir(staged: string, target: string): Promise<void> {
  if (backend(staged) === 'gs' || backend(target) === 'gs') {
    if (!isGs(staged) || !isGs(target)) throw new Error(`swapDir: ${staged} and ${target} must both be local or both gs://`)
    return (await gcs()).gcsSwapDir(staged, target)
  }
  const old = `${target}.old-${process.pid}`
  const had = await exists(target)
  if (had) await rename(target, old)
  await rename(staged, target)
  if (had) await rm(old, {recursive: true, force: true})
}
