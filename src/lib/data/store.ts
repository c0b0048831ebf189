// The dataset store: immutable TFRecord shards plus an atomically replaced manifest.json listing them.
// Writers add shards, then one commit publishes them; readers trust only what the manifest lists.
import {createHash} from 'node:crypto'
import {crc32c} from '@node-rs/crc32'
import os from 'node:os'
import path from 'node:path'
import {PNG} from 'pngjs'
import sharp from 'sharp'
import {SPLITS, type ImageSpec, type SplitName} from '../config/schema.js'
// Every file access goes through the storage layer, so a store can live on a local disk or on gs://.
import {
  appendText,
  createWriter,
  errorCode,
  fileSize,
  joinPath,
  listNames,
  localCopy,
  makeDir,
  openRead,
  readBytes,
  readText,
  readVersioned,
  remove,
  resolveLocation,
  writeFileAtomic,
} from '../storage/index.js'
import {UserError} from '../errors.js'
import {decodeExample, prepareExample} from './example.js'
import type {SplitFractions} from './splits.js'
import {extendCrc32cOverRecord, frameRecord, PAYLOAD_OFFSET, readRecords, RECORD_OVERHEAD, streamRecords} from './tfrecord.js'
import type {ClassCounts, DatasetManifest, DecodedSplit, ImageRecord, QuarantineEntry, RecordToWrite, ShardInfo, SourceCheckpoints} from './types.js'

const MANIFEST = 'manifest.json'
const MANIFESTS_DIR = 'manifests'
const SHARDS_DIR = 'shards'
const QUARANTINE = 'quarantine.jsonl'
const LOCK = '.lock'
/** Shards up to this size are read whole (one read, then hashed and parsed in memory). */
const IN_MEMORY_SHARD_BYTES = 256 << 20
/** Framed records are written in chunks of about this size, from a buffer of this size. */
const WRITE_CHUNK_BYTES = 1 << 20
const WRITE_BUFFER_BYTES = 2 << 20

/** A shard open for appending; see DatasetStore.openShard. */
export interface ShardWriter {
  readonly split: SplitName
  /** Records appended so far. */
  readonly count: number
  /** Appends one record; the next append or close must wait until it has settled. */
  append(record: RecordToWrite): Promise<void>
  /** Flushes, syncs and publishes the shard file and its key list; pending until commit(). */
  close(): Promise<ShardInfo>
  /** Deletes what was written; the store forgets the shard. */
  abort(): Promise<void>
}

export type HistoryEntry = DatasetManifest['history'][number]

const pad = (n: number, width: number) => String(n).padStart(width, '0')
const sha256Hex = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex')

/** A CRC-32C as ShardInfo.crc32c writes it: base64 of the 4 big-endian bytes. */
function crc32cText(crc: number): string {
  const bytes = Buffer.alloc(4)
  bytes.writeUInt32BE(crc >>> 0)
  return bytes.toString('base64')
}

function corrupt(message: string, details: Record<string, unknown>, cause?: unknown): UserError {
  return new UserError(message, {
    code: 'DATASET_CORRUPT',
    exit: 'data',
    cause,
    details,
    suggestions: ['Restore the store from a backup, or delete it and run `ml ingest` again.'],
  })
}

/** Writes a file so that readers see either the old content or the new, never a torn write (and durably). */
const atomicWrite = (file: string, data: string | Uint8Array) => writeFileAtomic(file, data)

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readText(file)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw error
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Orders new class names: numerically when both are digit strings (so "2" < "10"), else by code point. */
export function compareClassNames(a: string, b: string): number {
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) {
    const d = Number(a) - Number(b)
    if (d !== 0) return d
  }
  return a < b ? -1 : a > b ? 1 : 0
}

function parseManifest(text: string, file: string): DatasetManifest {
  let manifest: DatasetManifest
  try {
    manifest = JSON.parse(text) as DatasetManifest
  } catch (error) {
    throw corrupt(`${file} is not valid JSON: ${(error as Error).message}`, {file}, error)
  }
  if (manifest?.format !== 'ml-dataset' || !Array.isArray(manifest.shards)) {
    throw corrupt(`${file} is not an ml dataset manifest`, {file})
  }
  if (manifest.formatVersion !== 1) {
    throw new UserError(`${file} has dataset format version ${manifest.formatVersion}; this ml reads version 1`, {
      code: 'DATASET_FORMAT',
      exit: 'data',
      details: {file},
      suggestions: ['Use the ml version that wrote the dataset, or re-create it with `ml ingest` into a new store.'],
    })
  }
  return manifest
}

/** Reads `<dir>/manifest.json`, the committed state of a dataset store. */
export async function readManifest(dir: string): Promise<DatasetManifest> {
  const file = joinPath(dir, MANIFEST)
  const text = await readIfExists(file)
  if (text === undefined) {
    throw new UserError(`no dataset at ${dir} (${MANIFEST} not found)`, {
      code: 'DATASET_NOT_FOUND',
      exit: 'data',
      details: {store: dir},
      suggestions: ['run `ml ingest` first'],
    })
  }
  return parseManifest(text, file)
}

function emptyCounts(classes: string[]): Record<SplitName, ClassCounts> {
  const counts = {} as Record<SplitName, ClassCounts>
  for (const split of SPLITS) counts[split] = Object.fromEntries(classes.map((name) => [name, 0]))
  return counts
}

function specDiff(a: ImageSpec, b: ImageSpec): string[] {
  return (['width', 'height', 'channels', 'fit'] as const).filter((k) => a[k] !== b[k]).map((k) => `${k} ${a[k]} vs ${b[k]}`)
}

/**
 * Takes the store's writer lock: a file holding our pid and host (created only if absent), taken
 * over when its owner is gone. The commit's manifest precondition backs it up where the lock cannot
 * tell (a stale lock taken over by two processes at once).
 */
async function lock(dir: string): Promise<void> {
  const file = joinPath(dir, LOCK)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFileAtomic(file, `${process.pid} ${os.hostname()}\n`, {createOnly: true})
      return
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error
    }
    const [pidText, host] = ((await readIfExists(file)) ?? '').trim().split(/\s+/)
    const owner = Number.parseInt(pidText ?? '', 10)
    // A pid says nothing about a process on another machine (a gs:// store is shared between
    // hosts): that one is taken to be running. Our own pid here means an earlier store object of
    // this process (or a dead process whose pid was reused by us, as in containers).
    const elsewhere = host !== undefined && host !== os.hostname()
    if (Number.isInteger(owner) && (elsewhere || (owner !== process.pid && isAlive(owner)))) {
      throw new UserError(`the dataset store ${dir} is being written by another ml process (pid ${owner}${elsewhere ? ` on ${host}` : ''})`, {
        code: 'DATASET_LOCKED',
        exit: 'usage',
        details: {store: dir, pid: owner, ...(elsewhere ? {host} : {})},
        suggestions: [`Wait for it to finish, or delete ${file} if no such process is running.`],
      })
    }
    await remove(file)
  }
  throw new Error(`could not lock ${dir}`)
}

async function unlock(dir: string): Promise<void> {
  const file = joinPath(dir, LOCK)
  const owner = await readIfExists(file)
  if (owner !== undefined && Number.parseInt(owner, 10) === process.pid) await remove(file)
}

/**
 * A dataset store opened for writing. Shards written here stay invisible until commit(); a run that
 * dies before committing leaves files that the next open() deletes. One writer at a time (a lock file
 * whose owner is checked by pid), any number of readers (they only follow the manifest).
 */
export class DatasetStore {
  readonly dir: string
  readonly image: ImageSpec
  readonly split: SplitFractions
  private committed: DatasetManifest | undefined
  private classNames: string[]
  private readonly keys = new Set<string>()
  private pending: ShardInfo[] = []
  private readonly openShards = new Set<ShardWriter>()
  private pendingKeys: string[] = []
  private quarantine: QuarantineEntry[] = []
  private readonly quarantined = new Set<string>()
  /** Examples per split and class name in the shards written since the last commit. */
  private readonly pendingCounts = new Map<SplitName, Map<string, number>>()
  private readonly shardNumber: Record<SplitName, number> = {train: 0, validation: 0, test: 0}
  private locked = false
  /** Revision of manifest.json as read or last written: a commit replaces only that one. */
  private manifestRevision: string | undefined

  private constructor(dir: string, image: ImageSpec, split: SplitFractions, manifest: DatasetManifest | undefined) {
    this.dir = dir
    this.image = image
    this.split = split
    this.committed = manifest
    this.classNames = [...(manifest?.classes ?? [])]
  }

  /** Opens (creating if needed) the store in `dir` for an ingest with this image spec and split rule. */
  static async open(dir: string, image: ImageSpec, split: SplitFractions): Promise<DatasetStore> {
    const root = resolveLocation(dir)
    await makeDir(joinPath(root, SHARDS_DIR))
    await makeDir(joinPath(root, MANIFESTS_DIR))
    // Locked before the manifest is read: another writer committing in between would otherwise
    // make its new shards look like strays to delete.
    await lock(root)
    try {
      const store = await DatasetStore.load(root, image, split)
      store.locked = true
      return store
    } catch (error) {
      await unlock(root)
      throw error
    }
  }

  private static async load(root: string, image: ImageSpec, split: SplitFractions): Promise<DatasetStore> {
    const read = await readVersioned(joinPath(root, MANIFEST))
    const manifest = read === undefined ? undefined : parseManifest(read.data.toString('utf8'), joinPath(root, MANIFEST))
    if (manifest) {
      const diff = specDiff(manifest.image, image)
      if (diff.length > 0) {
        throw new UserError(
          `the dataset store ${root} holds ${manifest.image.width}x${manifest.image.height}x${manifest.image.channels} ` +
            `(fit ${manifest.image.fit}) images but data.image asks for ${image.width}x${image.height}x${image.channels} ` +
            `(fit ${image.fit}): ${diff.join(', ')}`,
          {
            code: 'DATASET_SPEC_MISMATCH',
            exit: 'usage',
            details: {store: root, stored: manifest.image, config: image},
            suggestions: ['Set another `data.store` for the new image size, or delete the store to re-ingest everything.'],
          },
        )
      }
      const s = manifest.split
      if (s.validation !== split.validation || s.test !== split.test || s.seed !== split.seed) {
        // Changing the rule would leave stored images split by the old one and new ones by the new
        // one: say so rather than silently keep either.
        throw new UserError(
          `the dataset store ${root} was split with validation ${s.validation}, test ${s.test}, seed ${s.seed} ` +
            `but data.split says validation ${split.validation}, test ${split.test}, seed ${split.seed}`,
          {
            code: 'DATASET_SPEC_MISMATCH',
            exit: 'usage',
            details: {store: root, stored: s, config: split},
            suggestions: [
              'Restore the old data.split values, or set another `data.store` (or delete the store) to re-split everything.',
            ],
          },
        )
      }
    }
    const store = new DatasetStore(root, image, split, manifest)
    store.manifestRevision = read?.revision
    await store.removeStrays()
    await store.loadKeys()
    await store.loadQuarantine()
    return store
  }

  /** The last committed manifest, or undefined for a store nothing was ever committed to. */
  get manifest(): DatasetManifest | undefined {
    return this.committed
  }

  get version(): number {
    return this.committed?.version ?? 0
  }

  get classes(): readonly string[] {
    return this.classNames
  }

  /** Examples committed so far. */
  get total(): number {
    return this.committed?.total ?? 0
  }

  /** Shards written since the last commit. */
  get pendingShards(): readonly ShardInfo[] {
    return this.pending
  }

  /** True when an image with this dedupe key is committed or in a shard written since. */
  hasKey(key: string): boolean {
    return this.keys.has(key)
  }

  /**
   * Registers class names known up front. Names not seen before are sorted, then appended, so a first
   * ingest gets sorted indices and later ones never renumber existing classes.
   */
  registerClasses(names: Iterable<string>): void {
    const known = new Set(this.classNames)
    const fresh = [...new Set(names)].filter((name) => !known.has(name)).sort(compareClassNames)
    this.classNames.push(...fresh)
  }

  /** The index of class `name`, appending it if new. */
  classIndex(name: string): number {
    let index = this.classNames.indexOf(name)
    if (index === -1) index = this.classNames.push(name) - 1
    return index
  }

  /** Writes one shard of `split` (invisible until commit) and its key list. */
  async writeShard(split: SplitName, records: readonly RecordToWrite[]): Promise<ShardInfo> {
    if (records.length === 0) throw new Error('writeShard: no records')
    const shard = this.openShard(split)
    try {
      for (const r of records) await shard.append(r)
    } catch (error) {
      await shard.abort()
      throw error
    }
    return shard.close()
  }

  /**
   * Opens a shard of `split` that records are appended to as they arrive, so that a large shard
   * (4096 photos at 224x224 are ~600 MB) is never held in memory and its writing overlaps the
   * decoding of the next images. Like writeShard, the shard is invisible until commit(); discard()
   * aborts a shard still open.
   */
  openShard(split: SplitName): ShardWriter {
    const {width, height, channels} = this.image
    const addedIn = this.version + 1
    // Numbered synchronously, so concurrent shards get distinct names.
    const base = `${split}-${pad(addedIn, 6)}-${pad(this.shardNumber[split]++, 5)}`
    const file = `${SHARDS_DIR}/${base}.tfrecord`
    const keysFile = `${SHARDS_DIR}/${base}.keys`
    const writer = createWriter(joinPath(this.dir, file))
    // A failed open surfaces on the first append; until then it must not be an unhandled rejection.
    writer.catch(() => {})
    // The file's checksum, carried along record by record (from each record's own payload CRC,
    // without a second pass over large payloads). CRC-32C rather than a cryptographic hash: it
    // guards against damage, which is the threat (whoever can rewrite a shard can rewrite the
    // manifest too), at ~10x sha256's speed, for ingest and every load.
    let crc = 0
    const records: Array<{key: string; text: string}> = []
    // Records are framed straight into a write buffer, written and then reused: no per-record
    // allocation (photo records are ~150 KB each). Two buffers take turns: records are framed into
    // one while the other is written, so an append waits for the disk only if it fills a chunk
    // before the previous write is done. (Awaiting every write held the ingest's in-order handling
    // up ~5 ms per MB, the write queueing in libuv's pool behind the image decodes.) Calls must
    // not overlap: one arriving mid-append could overwrite bytes not yet written.
    let buffer = Buffer.alloc(0)
    let spare = Buffer.alloc(0)
    /** The write of the spare buffer's bytes; its error surfaces at the next append or close. */
    let writing: Promise<void> = Promise.resolve()
    let filled = 0
    let bytes = 0
    let closed = false
    let appending = false
    const notWhileAppending = (method: string) => {
      if (appending) throw new Error(`ShardWriter.${method}: the previous append has not settled`)
    }
    const writeBuffered = async () => {
      if (filled === 0) return
      await writing
      const data = buffer.subarray(0, filled)
      bytes += filled
      filled = 0
      ;[buffer, spare] = [spare, buffer]
      writing = writer.then((w) => w.write(data))
      writing.catch(() => {})
    }
    const appendOne = async (r: RecordToWrite) => {
      if (r.width !== width || r.height !== height || r.channels !== channels) {
        throw new Error(`writeShard: record ${r.key} is ${r.width}x${r.height}x${r.channels}, store is ${width}x${height}x${channels}`)
      }
      if (this.classNames[r.label] !== r.text) throw new Error(`writeShard: record ${r.key} has label ${r.label} but text "${r.text}"`)
      const example = prepareExample(r)
      const size = example.size + RECORD_OVERHEAD
      if (filled + size > buffer.length) {
        await writeBuffered()
        if (size > buffer.length) buffer = Buffer.allocUnsafe(Math.max(size, WRITE_BUFFER_BYTES))
      }
      example.writeTo(buffer, filled + PAYLOAD_OFFSET)
      const start = filled
      filled = frameRecord(buffer, filled, example.size)
      crc = extendCrc32cOverRecord(crc, buffer, start, filled)
      records.push({key: r.key, text: r.text})
      if (filled >= WRITE_CHUNK_BYTES) await writeBuffered()
    }
    const shard: ShardWriter = {
      split,
      get count() {
        return records.length
      },
      append: async (r) => {
        if (closed) throw new Error('ShardWriter.append: shard already closed')
        notWhileAppending('append')
        appending = true
        try {
          await appendOne(r)
        } finally {
          appending = false
        }
      },
      close: async () => {
        notWhileAppending('close')
        if (closed) throw new Error('ShardWriter.close: shard already closed')
        if (records.length === 0) throw new Error('writeShard: no records')
        closed = true
        try {
          await writeBuffered()
          await writing
          await (await writer).commit()
          const keys = records.map((r) => r.key)
          await atomicWrite(joinPath(this.dir, keysFile), keys.join('\n') + '\n')
          const info: ShardInfo = {file, split, count: records.length, bytes, crc32c: crc32cText(crc), keysFile, addedIn}
          this.pending.push(info)
          for (const key of keys) {
            this.keys.add(key)
            this.pendingKeys.push(key)
          }
          let byClass = this.pendingCounts.get(split)
          if (!byClass) this.pendingCounts.set(split, (byClass = new Map()))
          for (const r of records) byClass.set(r.text, (byClass.get(r.text) ?? 0) + 1)
          return info
        } catch (error) {
          await shard.abort()
          throw error
        } finally {
          this.openShards.delete(shard)
        }
      },
      // Once: a shard leaves openShards when it is aborted or published.
      abort: async () => {
        if (!this.openShards.delete(shard)) return
        closed = true
        // The file is closed and removed only once no write is using it.
        await writing.catch(() => {})
        await (await writer.catch(() => undefined))?.abort()
        await remove(joinPath(this.dir, keysFile))
      },
    }
    this.openShards.add(shard)
    return shard
  }

  /** Queues quarantine entries; they are appended to quarantine.jsonl by the next commit(). */
  addQuarantine(entries: Iterable<QuarantineEntry>): void {
    for (const entry of entries) this.quarantine.push(entry)
  }

  /**
   * Appends queued quarantine entries, skipping an origin already quarantined for the same reason so
   * that re-running an ingest over the same bad files does not grow the file.
   */
  async flushQuarantine(): Promise<void> {
    const fresh: QuarantineEntry[] = []
    for (const entry of this.quarantine) {
      const id = `${entry.reason}\u0000${entry.origin}`
      if (this.quarantined.has(id)) continue
      this.quarantined.add(id)
      fresh.push(entry)
    }
    this.quarantine = []
    if (fresh.length === 0) return
    await appendText(joinPath(this.dir, QUARANTINE), fresh.map((e) => JSON.stringify(e) + '\n').join(''))
  }

  /**
   * Publishes the shards written since the last commit as manifest version+1. With nothing written
   * the manifest is left as it is (same version), so re-ingesting the same data is a no-op.
   */
  async commit(history: Omit<HistoryEntry, 'version' | 'at'>, extra: {sources?: SourceCheckpoints} = {}): Promise<DatasetManifest> {
    await this.flushQuarantine()
    const now = new Date().toISOString()
    const previous = this.committed
    if (this.pending.length === 0) {
      return previous ?? this.emptyManifest(now)
    }
    const version = this.version + 1
    const counts = emptyCounts(this.classNames)
    if (previous) {
      for (const split of SPLITS) for (const [name, n] of Object.entries(previous.counts[split] ?? {})) counts[split][name] = n
    }
    const allKeys = [...this.keys].sort()
    let total = previous?.total ?? 0
    for (const shard of this.pending) total += shard.count
    for (const [split, byClass] of this.pendingCounts) for (const [name, n] of byClass) counts[split][name] = (counts[split][name] ?? 0) + n
    const manifest: DatasetManifest = {
      format: 'ml-dataset',
      formatVersion: 1,
      version,
      createdAt: previous?.createdAt ?? now,
      updatedAt: now,
      image: this.image,
      classes: [...this.classNames],
      counts,
      total,
      shards: [...(previous?.shards ?? []), ...this.pending],
      split: {validation: this.split.validation, test: this.split.test, seed: this.split.seed},
      fingerprint: sha256Hex(allKeys.join('\n')),
      history: [...(previous?.history ?? []), {version, at: now, ...history}],
    }
    const sources = extra.sources ?? previous?.sources
    if (sources !== undefined) manifest.sources = sources
    const text = JSON.stringify(manifest, null, 2) + '\n'
    // History first: once manifest.json names a version, its copy under manifests/ exists.
    await atomicWrite(joinPath(this.dir, MANIFESTS_DIR, `v${pad(version, 4)}.json`), text)
    await this.publishManifest(text, version)
    this.committed = manifest
    this.pending = []
    this.pendingKeys = []
    this.pendingCounts.clear()
    for (const split of SPLITS) this.shardNumber[split] = 0
    return manifest
  }

  /**
   * Replaces manifest.json only if it is still the one this store read (or last wrote): a writer that
   * got past the lock (a stale lock taken over twice, another host) fails here instead of silently
   * dropping the other's shards. Exact on Cloud Storage (generation precondition).
   */
  private async publishManifest(text: string, version: number): Promise<void> {
    const file = joinPath(this.dir, MANIFEST)
    try {
      this.manifestRevision = await writeFileAtomic(file, text, this.manifestRevision === undefined ? {createOnly: true} : {ifRevision: this.manifestRevision})
    } catch (error) {
      const code = errorCode(error)
      if (code !== 'EEXIST' && code !== 'ECONFLICT') throw error
      throw new UserError(`another writer committed to the dataset store ${this.dir} while this ingest ran; version ${version} was not published`, {
        code: 'DATASET_CONFLICT',
        exit: 'data',
        cause: error,
        details: {store: this.dir},
        suggestions: ['Run `ml ingest` again: it continues from the other writer\'s version and skips what is already stored.'],
      })
    }
  }

  /** Drops everything written since the last commit (shard files, keys, queued quarantine). */
  async discard(): Promise<void> {
    for (const shard of [...this.openShards]) await shard.abort()
    const shards = this.pending
    this.pending = []
    for (const key of this.pendingKeys) this.keys.delete(key)
    this.pendingKeys = []
    this.pendingCounts.clear()
    this.quarantine = []
    this.classNames = [...(this.committed?.classes ?? [])]
    for (const shard of shards) {
      await remove(joinPath(this.dir, shard.file))
      await remove(joinPath(this.dir, shard.keysFile))
    }
  }

  /** Releases the writer lock. Uncommitted shards are left for the next open() to clean up. */
  async close(): Promise<void> {
    if (!this.locked) return
    this.locked = false
    await unlock(this.dir)
  }

  private emptyManifest(now: string): DatasetManifest {
    return {
      format: 'ml-dataset',
      formatVersion: 1,
      version: 0,
      createdAt: now,
      updatedAt: now,
      image: this.image,
      classes: [...this.classNames],
      counts: emptyCounts(this.classNames),
      total: 0,
      shards: [],
      split: {validation: this.split.validation, test: this.split.test, seed: this.split.seed},
      fingerprint: sha256Hex(''),
      history: [],
    }
  }

  /** Deletes what interrupted runs left: temp files, and shards and manifests no manifest names. */
  private async removeStrays(): Promise<void> {
    // <file>.tmp-<pid>, or .tmp-<pid>-<random> from the storage layer's atomic writes.
    const isTmp = (name: string) => /\.tmp-\d+(-[0-9a-f]+)?$/.test(name)
    for (const name of await listNames(this.dir)) if (isTmp(name)) await remove(joinPath(this.dir, name))
    const referenced = new Set<string>()
    for (const shard of this.committed?.shards ?? []) {
      referenced.add(path.posix.basename(shard.file))
      referenced.add(path.posix.basename(shard.keysFile))
    }
    for (const name of await listNames(joinPath(this.dir, SHARDS_DIR))) {
      if (!referenced.has(name)) await remove(joinPath(this.dir, SHARDS_DIR, name))
    }
    for (const name of await listNames(joinPath(this.dir, MANIFESTS_DIR))) {
      const version = /^v(\d+)\.json$/.exec(name)
      if (isTmp(name) || (version && Number(version[1]) > this.version)) await remove(joinPath(this.dir, MANIFESTS_DIR, name))
    }
  }

  private async loadKeys(): Promise<void> {
    const shards = this.committed?.shards ?? []
    // Read a few ahead: on Cloud Storage each key list is a request, and a store has many shards.
    const AHEAD = 16
    const texts: Array<Promise<string | undefined>> = []
    const prefetch = (i: number) => {
      if (i >= shards.length) return
      texts[i] = readIfExists(joinPath(this.dir, shards[i]!.keysFile))
      // Marked as handled: when the loop stops early on a bad shard, reads still in flight may fail unseen.
      texts[i]!.catch(() => {})
    }
    for (let i = 0; i < AHEAD; i++) prefetch(i)
    for (const [i, shard] of shards.entries()) {
      prefetch(i + AHEAD)
      const text = await texts[i]!
      const keys = text === undefined ? [] : text.split('\n').filter((line) => line.length > 0)
      if (text === undefined || keys.length !== shard.count) {
        throw corrupt(
          text === undefined
            ? `key list ${shard.keysFile} of dataset ${this.dir} is missing`
            : `key list ${shard.keysFile} of dataset ${this.dir} has ${keys.length} keys, the manifest says ${shard.count}`,
          {store: this.dir, shard: shard.file},
        )
      }
      for (const key of keys) this.keys.add(key)
    }
  }

  private async loadQuarantine(): Promise<void> {
    const text = await readIfExists(joinPath(this.dir, QUARANTINE))
    for (const line of text?.split('\n') ?? []) {
      if (!line) continue
      try {
        const entry = JSON.parse(line) as QuarantineEntry
        this.quarantined.add(`${entry.reason}\u0000${entry.origin}`)
      } catch {
        // A torn last line from a crash: the entry is simply written again.
      }
    }
  }
}

/** The checksum the manifest recorded for `shard` (crc32c, or sha256 for older shards) over `chunks`. */
async function checksum(shard: ShardInfo, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<{expected?: string; actual: string; kind: string}> {
  if (shard.crc32c === undefined && shard.sha256 !== undefined) {
    const hash = createHash('sha256')
    for await (const chunk of chunks) hash.update(chunk)
    return {expected: shard.sha256, actual: hash.digest('hex'), kind: 'sha256'}
  }
  let crc = 0
  for await (const chunk of chunks) crc = crc32c(chunk, crc)
  return {expected: shard.crc32c, actual: crc32cText(crc), kind: 'crc32c'}
}

/**
 * Yields the records of one committed shard, after checking the file's size and checksum against the
 * manifest: a shard is immutable once committed, so any difference means damage.
 */
export async function* readShard(dir: string, shard: ShardInfo): AsyncGenerator<ImageRecord> {
  const file = joinPath(dir, shard.file)
  const details = {store: dir, shard: shard.file}
  const size = await fileSize(file)
  if (size === undefined) throw corrupt(`shard ${shard.file} of dataset ${dir} is missing`, details)
  if (size !== shard.bytes) {
    throw corrupt(`shard ${shard.file} of dataset ${dir} is corrupt: ${size} bytes, the manifest says ${shard.bytes}`, details)
  }
  const verify = async (chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>) => {
    const {expected, actual, kind} = await checksum(shard, chunks)
    if (expected === undefined) throw corrupt(`shard ${shard.file} of dataset ${dir} has no checksum in the manifest`, details)
    if (actual !== expected) throw corrupt(`shard ${shard.file} of dataset ${dir} is corrupt: its ${kind} does not match the manifest`, details)
  }
  let payloads: Iterable<Buffer> | AsyncIterable<Buffer>
  // Big shards need random access: a remote one is downloaded to a temp file first (released below).
  let copy: Awaited<ReturnType<typeof localCopy>> | undefined
  try {
    if (size <= IN_MEMORY_SHARD_BYTES) {
      const buf = await readBytes(file)
      await verify([buf])
      payloads = readRecords(buf, file)
    } else {
      copy = await localCopy(file)
      // Too big to hold: check in one pass, then parse in a second rather than yield unverified records.
      await verify(await openRead(copy.path, {highWaterMark: 1 << 20}))
      payloads = streamRecords(copy.path)
    }
    let index = 0
    for await (const payload of payloads) {
      yield decodeExample(payload, `${file} record ${index}`)
      index++
    }
    if (index !== shard.count) {
      throw corrupt(`shard ${shard.file} of dataset ${dir} holds ${index} examples, the manifest says ${shard.count}`, details)
    }
  } finally {
    await copy?.release()
  }
}

/**
 * Decodes a PNG straight into `out` (height x width x channels) with pngjs, which is several times
 * faster than sharp for tiny images because it avoids libvips' per-image setup. Returns false when
 * pngjs cannot read it or the size is not the expected one.
 */
function decodePngInto(encoded: Uint8Array, out: Uint8Array, width: number, height: number, channels: number): boolean {
  let png
  try {
    png = PNG.sync.read(Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength))
  } catch {
    return false
  }
  if (png.width !== width || png.height !== height) return false
  const rgba = png.data
  const n = width * height
  if (channels === 3) {
    for (let p = 0, o = 0; p < n; p++, o += 3) {
      out[o] = rgba[p * 4]!
      out[o + 1] = rgba[p * 4 + 1]!
      out[o + 2] = rgba[p * 4 + 2]!
    }
  } else if (!png.color) {
    // pngjs expands grey to R = G = B.
    for (let p = 0; p < n; p++) out[p] = rgba[p * 4]!
  } else {
    // Rec. 601 luma, the weights sharp's greyscale uses.
    for (let p = 0; p < n; p++) {
      out[p] = Math.round(0.299 * rgba[p * 4]! + 0.587 * rgba[p * 4 + 1]! + 0.114 * rgba[p * 4 + 2]!)
    }
  }
  return true
}

async function decodeWithSharp(encoded: Uint8Array, out: Uint8Array, width: number, height: number, channels: number): Promise<void> {
  let image = sharp(encoded).resize(width, height, {fit: 'fill'})
  image = channels === 1 ? image.greyscale() : image.toColourspace('srgb')
  const {data, info} = await image.removeAlpha().raw().toBuffer({resolveWithObject: true})
  if (info.channels !== channels || data.length !== out.length) {
    throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}`)
  }
  out.set(data)
}

/** Decodes every image of `split` into one NHWC uint8 array, in shard order. */
export async function loadSplit(dir: string, split: SplitName, manifest?: DatasetManifest): Promise<DecodedSplit> {
  const m = manifest ?? (await readManifest(dir))
  const {width, height, channels} = m.image
  const shards = m.shards.filter((s) => s.split === split)
  const count = shards.reduce((sum, s) => sum + s.count, 0)
  const frame = width * height * channels
  const pixels = new Uint8Array(count * frame)
  const labels = new Int32Array(count)
  const keys: string[] = []
  let i = 0
  for (const shard of shards) {
    for await (const r of readShard(dir, shard)) {
      const out = pixels.subarray(i * frame, (i + 1) * frame)
      if (!decodePngInto(r.encoded, out, width, height, channels)) {
        try {
          await decodeWithSharp(r.encoded, out, width, height, channels)
        } catch (error) {
          throw corrupt(`image ${r.key} in shard ${shard.file} of dataset ${dir} cannot be decoded: ${(error as Error).message}`, {
            store: dir,
            shard: shard.file,
            key: r.key,
          }, error)
        }
      }
      if (!(r.label >= 0 && r.label < m.classes.length)) {
        throw corrupt(`image ${r.key} in shard ${shard.file} of dataset ${dir} has label ${r.label}, outside the ${m.classes.length} classes`, {
          store: dir,
          shard: shard.file,
          key: r.key,
        })
      }
      labels[i] = r.label
      keys.push(r.key)
      i++
    }
  }
  return {split, count, height, width, channels, pixels, labels, keys}
}
