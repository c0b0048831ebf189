// A dataset store opened for writing: the shards an ingest adds, invisible until one commit
// publishes them as the next manifest version.
import path from 'node:path'
import {SPLITS, type ImageSpec, type SplitName} from '../../config/schema.js'
import {UserError} from '../../errors.js'
// Every file access goes through the storage layer, so a store can live on a local disk, on gs:// or on s3://.
import {errorCode, joinPath, listNames, makeDir, readVersioned, remove, resolveLocation, writeFileAtomic} from '../../storage/index.js'
import type {SplitFractions} from '../splits.js'
import type {DatasetManifest, DuplicateEntry, QuarantineEntry, RecordToWrite, ShardInfo, SourceCheckpoints} from '../types.js'
import {Duplicates} from './duplicates.js'
import {accessing, corrupt, MANIFEST, MANIFESTS_DIR, originsFileOf, pad, readIfExists, SHARDS_DIR} from './layout.js'
import {lock, unlock} from './lock.js'
import {checkCompatible, compareClassNames, emptyManifest, nextManifest, parseManifest, type HistoryEntry} from './manifest.js'
import {Quarantine} from './quarantine.js'
import {openShardWriter, type ShardEntry, type ShardWriter} from './shard-writer.js'

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
  /** Every dedupe key stored, with the index of its committed shard (-1: a shard of this run). */
  private readonly keys = new Map<string, number>()
  private pending: ShardInfo[] = []
  private readonly openShards = new Set<ShardWriter>()
  private pendingKeys: string[] = []
  private quarantine!: Quarantine
  private duplicates!: Duplicates
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
    for (const sub of [SHARDS_DIR, MANIFESTS_DIR]) {
      const folder = joinPath(root, sub)
      await accessing(root, folder, () => makeDir(folder))
    }
    // Locked before the manifest is read: another writer committing in between would otherwise
    // make its new shards look like strays to delete.
    await accessing(root, joinPath(root, '.lock'), () => lock(root))
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
    const file = joinPath(root, MANIFEST)
    const read = await accessing(root, file, () => readVersioned(file))
    const manifest = read === undefined ? undefined : parseManifest(read.data.toString('utf8'), file)
    if (manifest) checkCompatible(manifest, root, image, split)
    const store = new DatasetStore(root, image, split, manifest)
    store.manifestRevision = read?.revision
    await store.removeStrays()
    await store.loadKeys()
    store.quarantine = await Quarantine.load(root)
    store.duplicates = await Duplicates.load(root)
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
   * Opens a shard of `split` that records are appended to as they arrive (see openShardWriter).
   * Like writeShard, the shard is invisible until commit(); discard() aborts a shard still open.
   */
  openShard(split: SplitName): ShardWriter {
    const addedIn = this.version + 1
    // Numbered synchronously, so concurrent shards get distinct names.
    const base = `${split}-${pad(addedIn, 6)}-${pad(this.shardNumber[split]++, 5)}`
    const shard: ShardWriter = openShardWriter({
      dir: this.dir,
      file: `${SHARDS_DIR}/${base}.tfrecord`,
      keysFile: `${SHARDS_DIR}/${base}.keys`,
      split,
      addedIn,
      image: this.image,
      classNames: () => this.classNames,
      published: (info, records) => this.published(info, records),
      released: () => this.openShards.delete(shard),
    })
    this.openShards.add(shard)
    return shard
  }

  /** A closed shard joins what the next commit publishes. */
  private published(info: ShardInfo, records: ReadonlyArray<ShardEntry>): void {
    this.pending.push(info)
    for (const {key} of records) {
      this.keys.set(key, -1)
      this.pendingKeys.push(key)
    }
    let byClass = this.pendingCounts.get(info.split)
    if (!byClass) this.pendingCounts.set(info.split, (byClass = new Map()))
    for (const r of records) byClass.set(r.text, (byClass.get(r.text) ?? 0) + 1)
  }

  /** Queues quarantine entries; they are appended to quarantine.jsonl by the next commit(). */
  addQuarantine(entries: Iterable<QuarantineEntry>): void {
    this.quarantine.add(entries)
  }

  /**
   * Queues dropped duplicates; they are appended to duplicates.jsonl by the next commit(). An entry
   * without duplicateOf duplicates a committed image, whose origin the commit looks up.
   */
  addDuplicates(entries: Iterable<DuplicateEntry>): void {
    this.duplicates.add(entries)
  }

  /**
   * Appends queued quarantine entries, skipping an origin already quarantined for the same reason so
   * that re-running an ingest over the same bad files does not grow the file.
   */
  async flushQuarantine(): Promise<void> {
    await this.quarantine.flush()
    await this.duplicates.flush((keys) => this.keptCopies(keys))
  }

  /** The origin (from the shard's origins list) or at least the shard of each committed key. */
  private async keptCopies(keys: string[]): Promise<Map<string, {origin?: string; shard: string}>> {
    const shards = this.committed?.shards ?? []
    const byShard = new Map<number, string[]>()
    for (const key of keys) {
      const index = this.keys.get(key)
      if (index === undefined || index < 0) continue
      byShard.set(index, [...(byShard.get(index) ?? []), key])
    }
    const out = new Map<string, {origin?: string; shard: string}>()
    for (const [index, wanted] of byShard) {
      const shard = shards[index]!
      const [keysText, originsText] = await Promise.all([
        readIfExists(joinPath(this.dir, shard.keysFile)),
        // Shards written before origins were recorded have no list: the shard is named instead.
        readIfExists(joinPath(this.dir, originsFileOf(shard.keysFile))).catch(() => undefined),
      ])
      const shardKeys = keysText?.split('\n') ?? []
      const origins = originsText?.split('\n') ?? []
      const wantedSet = new Set(wanted)
      for (const [i, key] of shardKeys.entries()) {
        if (!wantedSet.has(key)) continue
        let origin: string | undefined
        try {
          origin = origins[i] ? (JSON.parse(origins[i]!) as string) || undefined : undefined
        } catch {
          origin = undefined
        }
        out.set(key, origin === undefined ? {shard: shard.file} : {origin, shard: shard.file})
      }
    }
    return out
  }

  /**
   * Publishes the shards written since the last commit as manifest version+1. With nothing written
   * the manifest is left as it is (same version), so re-ingesting the same data is a no-op.
   */
  async commit(history: Omit<HistoryEntry, 'version' | 'at'>, extra: {sources?: SourceCheckpoints} = {}): Promise<DatasetManifest> {
    await this.flushQuarantine()
    const now = new Date().toISOString()
    if (this.pending.length === 0) return this.committed ?? emptyManifest(this.image, this.split, this.classNames, now)
    const manifest = nextManifest({
      previous: this.committed,
      image: this.image,
      split: this.split,
      classes: this.classNames,
      keys: this.keys.keys(),
      shards: this.pending,
      counts: this.pendingCounts,
      history,
      sources: extra.sources,
      now,
    })
    const text = JSON.stringify(manifest, null, 2) + '\n'
    // History first: once manifest.json names a version, its copy under manifests/ exists.
    await writeFileAtomic(joinPath(this.dir, MANIFESTS_DIR, `v${pad(manifest.version, 4)}.json`), text)
    await this.publishManifest(text, manifest.version)
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
    this.quarantine.drop()
    this.duplicates.drop()
    this.classNames = [...(this.committed?.classes ?? [])]
    for (const shard of shards) {
      await remove(joinPath(this.dir, shard.file))
      await remove(joinPath(this.dir, shard.keysFile))
      await remove(joinPath(this.dir, originsFileOf(shard.keysFile)))
    }
  }

  /** Releases the writer lock. Uncommitted shards are left for the next open() to clean up. */
  async close(): Promise<void> {
    if (!this.locked) return
    this.locked = false
    await unlock(this.dir)
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
      referenced.add(path.posix.basename(originsFileOf(shard.keysFile)))
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
      for (const key of keys) this.keys.set(key, i)
    }
  }
}
