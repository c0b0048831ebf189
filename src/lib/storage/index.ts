// The one interface over storage locations: atomic writes, reads and listings. Only this module knows
// whether a path is local, a gs:// object (Cloud Storage, in gcs.ts) or an s3:// object (Amazon S3 and
// S3-compatible stores, in s3.ts); other URI schemes are refused.
import {randomBytes} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {appendFile, copyFile, link, mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, unlink} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type {Readable} from 'node:stream'
import {UserError} from '../errors.js'
import type {WrittenContent} from './object-store.js'

export function isRemote(p: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(p)
}

const isGs = (p: string) => p.startsWith('gs://')
const isS3Path = (p: string) => p.startsWith('s3://')

/** True for Cloud Storage paths: the only ones a job on Google Cloud (Vertex AI) can read or write. */
export const isCloudStorage = (p: string) => isGs(p)

/** True for S3 paths: the only ones a job on AWS (SageMaker) can read or write. */
export const isS3 = (p: string) => isS3Path(p)

/** The Cloud Storage backend, loaded only when a gs:// path is first used. */
const gcs = () => import('./gcs.js')
/** The S3 backend, loaded only when an s3:// path is first used. */
const s3 = () => import('./s3.js')

/** Routes a path: 'gs' for Cloud Storage, 's3' for S3, 'local' for the file system; other URI schemes are refused. */
function backend(p: string): 'gs' | 's3' | 'local' {
  if (isGs(p)) return 'gs'
  if (isS3Path(p)) return 's3'
  if (isRemote(p)) {
    throw new UserError(`${p}: ${p.split(':')[0]}:// storage is not supported (only local paths, gs:// and s3://)`, {
      code: 'STORAGE_UNSUPPORTED',
      exit: 'usage',
      suggestions: ['Use a local path, a gs://bucket/path or an s3://bucket/path URI.'],
    })
  }
  return 'local'
}

/** What the storage layer needs of an object store; revisions are generations (gs://) or ETags (s3://). */
interface ObjectStore {
  /** One upload; a failed precondition rejects with EEXIST or ECONFLICT (settled by settleConditionalWrite). */
  write(uri: string, data: Buffer, options: WriteOptions): Promise<string>
  uploadFile(local: string, uri: string, options: WriteOptions): Promise<string>
  /** The object's revision when it holds exactly `content`, else undefined. */
  revisionIfHolding(uri: string, content: WrittenContent): Promise<string | undefined>
  read(uri: string): Promise<Buffer>
  readVersioned(uri: string): Promise<{data: Buffer; revision: string} | undefined>
  size(uri: string): Promise<number | undefined>
  readStream(uri: string): Promise<Readable>
  downloadTo(uri: string, local: string): Promise<void>
  exists(uri: string): Promise<boolean>
  listNames(dir: string): Promise<string[]>
  listEntries(dir: string): Promise<Entry[]>
  walk(dir: string): AsyncGenerator<{path: string; size: number}>
  remove(uri: string): Promise<void>
  swapDir(staged: string, target: string): Promise<void>
}

async function gcsStore(): Promise<ObjectStore> {
  const g = await gcs()
  const opts = (o: WriteOptions) => ({createOnly: o.createOnly, ifGeneration: o.ifRevision})
  return {
    write: (uri, data, o) => g.gcsWrite(uri, data, opts(o)),
    uploadFile: (local, uri, o) => g.gcsUploadFile(local, uri, opts(o)),
    revisionIfHolding: (uri, content) => g.gcsRevisionIfHolding(uri, content),
    read: (uri) => g.gcsRead(uri),
    readVersioned: async (uri) => {
      const result = await g.gcsReadVersioned(uri)
      return result && {data: result.data, revision: result.generation}
    },
    size: async (uri) => (await g.gcsStat(uri))?.size,
    readStream: (uri) => g.gcsReadStream(uri),
    downloadTo: (uri, local) => g.gcsDownloadTo(uri, local),
    exists: (uri) => g.gcsExists(uri),
    listNames: (dir) => g.gcsListNames(dir),
    listEntries: (dir) => g.gcsListEntries(dir),
    walk: async function* (dir) {
      const {bucket, key} = g.parseGsUri(dir)
      for await (const object of g.gcsWalk(bucket, key ? `${key}/` : '')) {
        // Zero-byte "folder" placeholders that some tools create are not files.
        if (!object.name.endsWith('/')) yield {path: `gs://${bucket}/${object.name}`, size: object.size}
      }
    },
    remove: (uri) => g.gcsRemove(uri),
    swapDir: (staged, target) => g.gcsSwapDir(staged, target),
  }
}

async function s3Store(): Promise<ObjectStore> {
  const b = await s3()
  const opts = (o: WriteOptions) => ({createOnly: o.createOnly, ifEtag: o.ifRevision})
  return {
    write: (uri, data, o) => b.s3Write(uri, data, opts(o)),
    uploadFile: (local, uri, o) => b.s3UploadFile(local, uri, opts(o)),
    revisionIfHolding: (uri, content) => b.s3RevisionIfHolding(uri, content),
    read: (uri) => b.s3Read(uri),
    readVersioned: async (uri) => {
      const result = await b.s3ReadVersioned(uri)
      return result && {data: result.data, revision: result.etag}
    },
    size: async (uri) => (await b.s3Stat(uri))?.size,
    readStream: (uri) => b.s3ReadStream(uri),
    downloadTo: (uri, local) => b.s3DownloadTo(uri, local),
    exists: (uri) => b.s3Exists(uri),
    listNames: (dir) => b.s3ListNames(dir),
    listEntries: (dir) => b.s3ListEntries(dir),
    walk: (dir) => b.s3Walk(dir),
    remove: (uri) => b.s3Remove(uri),
    swapDir: (staged, target) => b.s3SwapDir(staged, target),
  }
}

/**
 * Runs one conditional upload (create-only or revision-matched) to an object store. The clients retry
 * a request whose answer was lost (with backoff: gcs.ts and cloud/aws.ts configure it); when the
 * first attempt had landed, the retry fails its own precondition although the object now holds
 * exactly these bytes. Such a write counts as done, with the object's revision; any other failed
 * precondition stays EEXIST or ECONFLICT.
 */
async function settleConditionalWrite(store: ObjectStore, uri: string, options: WriteOptions, content: WrittenContent, upload: () => Promise<string>): Promise<string> {
  try {
    return await upload()
  } catch (error) {
    const code = errorCode(error)
    const conditional = options.createOnly === true || options.ifRevision !== undefined
    if (conditional && (code === 'EEXIST' || code === 'ECONFLICT')) {
      const revision = await store.revisionIfHolding(uri, content)
      if (revision !== undefined) return revision
    }
    throw error
  }
}

/** The object store holding `p`, or undefined for a local path. */
async function remoteOf(p: string): Promise<ObjectStore | undefined> {
  const kind = backend(p)
  return kind === 'gs' ? gcsStore() : kind === 's3' ? s3Store() : undefined
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
   * Cloud Storage (a generation precondition) and S3 (If-Match on the ETag) this is exact; on a local
   * disk it is checked just before the rename, so concurrent local writers must still hold a lock.
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
 * locally a temp file in the same folder, fsync, rename; on Cloud Storage and S3 one upload (objects
 * are replaced atomically). Returns the file's new revision (see readVersioned).
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, options: WriteOptions = {}): Promise<string> {
  const remote = await remoteOf(file)
  if (remote) {
    const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    return settleConditionalWrite(remote, file, options, {bytes}, () => remote.write(file, bytes, options))
  }
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
 * Opens a FileWriter for `file`. Locally the data goes to a temp file beside it; for Cloud Storage and
 * S3 it is spooled to a local temp file and uploaded on commit (resumable or multipart above 8 MiB),
 * which keeps memory flat and lets a failed upload be retried.
 */
export async function createWriter(file: string): Promise<FileWriter> {
  const store = await remoteOf(file)
  const remote = store !== undefined
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
        return await settleConditionalWrite(store!, file, options, {file: temp}, () => store!.uploadFile(temp, file, options))
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
  const remote = await remoteOf(file)
  if (remote) return remote.read(file)
  return readFile(file)
}

export async function readText(file: string): Promise<string> {
  return (await readBytes(file)).toString('utf8')
}

/** Reads a file with its revision, for a later `writeFileAtomic(..., {ifRevision})`; undefined when missing. */
export async function readVersioned(file: string): Promise<{data: Buffer; revision: string} | undefined> {
  const remote = await remoteOf(file)
  if (remote) return remote.readVersioned(file)
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
  const remote = await remoteOf(file)
  if (remote) return remote.size(file)
  try {
    return (await stat(file)).size
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/** A readable stream of a file's bytes (streamed from the object store for gs:// and s3://). */
export async function openRead(file: string, options: {highWaterMark?: number} = {}): Promise<Readable> {
  const remote = await remoteOf(file)
  if (remote) return remote.readStream(file)
  return createReadStream(file, options)
}

/**
 * A local path holding the file's bytes, for code that needs random access (big shards): the file
 * itself, or a downloaded temp copy that release() deletes.
 */
export async function localCopy(file: string): Promise<{path: string; release(): Promise<void>}> {
  const remote = await remoteOf(file)
  if (!remote) return {path: file, release: async () => {}}
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-download-'))
  const local = path.join(dir, baseName(file) || 'data')
  try {
    await remote.downloadTo(file, local)
  } catch (error) {
    await rm(dir, {recursive: true, force: true})
    throw error
  }
  return {path: local, release: () => rm(dir, {recursive: true, force: true})}
}

/**
 * Appends text to a file (created if missing). On Cloud Storage and S3, where objects cannot be
 * appended to, the object is rewritten with a revision precondition and retried when another writer won.
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

/** True when `p` exists: a file, a folder, or (on Cloud Storage and S3) an object or a prefix with objects under it. */
export async function exists(p: string): Promise<boolean> {
  const remote = await remoteOf(p)
  if (remote) return remote.exists(p)
  try {
    await stat(p)
    return true
  } catch {
    return false
  }
}

/** Creates a folder (and its parents); a no-op on Cloud Storage and S3, where folders are only name prefixes. */
export async function makeDir(dir: string): Promise<void> {
  if (backend(dir) !== 'local') return
  await mkdir(dir, {recursive: true})
}

/** Names of the entries directly in `dir` (empty when it does not exist). */
export async function listNames(dir: string): Promise<string[]> {
  const remote = await remoteOf(dir)
  if (remote) return remote.listNames(dir)
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
  const remote = await remoteOf(dir)
  if (remote) return remote.listEntries(dir)
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
 * objects is listed page by page. Paths are full paths (gs:// or s3:// URIs for object stores).
 */
export async function* walkFiles(dir: string): AsyncGenerator<{path: string; size: number}> {
  const remote = await remoteOf(dir)
  if (remote) {
    yield* remote.walk(dir)
    return
  }
  for (const entry of await listEntries(dir)) {
    const full = path.join(dir, entry.name)
    if (entry.kind === 'folder') yield* walkFiles(full)
    else yield {path: full, size: entry.size ?? 0}
  }
}

/**
 * Copies every file under `dir` (a local folder, or a gs:// or s3:// prefix) into the local folder `into`,
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
    const remote = await remoteOf(file.path)
    if (remote) await remote.downloadTo(file.path, target)
    else await copyFile(file.path, target)
    count++
  }
  return count
}

/** Deletes a file or a folder with everything in it; a missing one is fine. */
export async function remove(p: string): Promise<void> {
  const remote = await remoteOf(p)
  if (remote) return remote.remove(p)
  await rm(p, {recursive: true, force: true})
}

/**
 * Replaces directory `target` with `staged` (a sibling) as close to atomically as the storage allows:
 * two renames locally; on Cloud Storage and S3, which have no rename, a server-side copy of each object
 * (data before JSON metadata) and then deletes.
 */
export async function swapDir(staged: string, target: string): Promise<void> {
  if (backend(staged) !== backend(target)) throw new Error(`swapDir: ${staged} and ${target} must be on the same storage`)
  const remote = await remoteOf(target)
  if (remote) return remote.swapDir(staged, target)
  const old = `${target}.old-${process.pid}`
  const had = await exists(target)
  if (had) await rename(target, old)
  await rename(staged, target)
  if (had) await rm(old, {recursive: true, force: true})
}
