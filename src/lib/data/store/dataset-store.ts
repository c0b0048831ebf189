// A dataset store opened for writing: the shards an ingest adds, invisible until one commit
// publishes them as the next manifest version.
import {randomBytes} from 'node:crypto'
import path from 'node:path'
import {SPLITS, type ImageSpec, type SplitName} from '../../config/schema.js'
import {UserError} from '../../errors.js'
// Every file access goes through the storage layer, so a store can live on a local disk, on gs:// or on s3://.
import {errorCode, joinPath, listNames, makeDir, readVersioned, remove, resolveLocation, writeFileAtomic} from '../../storage/index.js'
import {fencedError, mergeCheckpoints, movedClaims, type MovedPartition} from '../checkpoints.js'
import type {SplitFractions} from '../splits.js'
import type {DatasetManifest, DuplicateEntry, QuarantineEntry, RecordToWrite, ShardInfo, SourceCheckpoints, SourceClaims} from '../types.js'
import {Duplicates} from './duplicates.js'
import {accessing, corrupt, MANIFEST, MANIFESTS_DIR, originsFileOf, pad, readIfExists, SHARDS_DIR, WRITERS_DIR} from './layout.js'
import {deadWriters, isAlive, lock, register, unlock, unregister} from './lock.js'
import {
  checkCompatible,
  compareClassNames,
  emptyCounts,
  emptyManifest,
  followingVersion,
  lostRace,
  nextManifest,
  parseManifest,
  readLatestManifest,
  versionFile,
  type HistoryEntry,
} from './manifest.js'
import {Quarantine} from './quarantine.js'
import {openShardWriter, type ShardEntry, type ShardWriter} from './shard-writer.js'

/** How many times a shared writer re-reads and merges before giving up on a commit (each retry means another writer committed). */
const MAX_COMMIT_ATTEMPTS = 100

/** A shared writer's shard names carry its id: `<split>-w<id>-<number>`. */
const SHARED_SHARD = /^(?:train|validation|test)-w([0-9a-f]{8})-/

export interface StoreOpenOptions {
  /**
   * Write alongside other shared writers (the members of one Kafka consumer group): no exclusive
   * lock but a registration under writers/; shard names carry this writer's id; class indices are
   * agreed through the manifest (ensureClass); commit() merges into what the others committed.
   */
  shared?: boolean
}

/** What a commit records besides its shards. */
export interface CommitExtra {
  /** Stream positions of this commit, merged into the latest manifest's (this writer's partitions win). */
  sources?: SourceCheckpoints
  /** Positions the latest manifest must still hold, else the commit is refused (see movedClaims). */
  claims?: SourceClaims
}

/**
 * A dataset store opened for writing. Shards written here stay invisible until commit(); a run that
 * dies before committing leaves files that a later open() deletes. Either one exclusive writer (a
 * lock file whose owner is checked by pid) or several shared ones (see StoreOpenOptions), and any
 * number of readers (they only follow the manifest).
 *
 * A commit is the exclusive creation of manifests/v<N+1>.json (link(2) on a local disk, an
 * ifGenerationMatch=0 precondition on Cloud Storage, If-None-Match on S3): of writers racing for the
 * same version exactly one succeeds, and a shared writer that lost re-reads what the winner
 * committed and tries the next version with its shards merged in. manifest.json is then replaced
 * by the new version (compare-and-swap on its revision); readers follow the versioned files past
 * it (readLatestManifest), so a crash between the two steps, or two writers replacing it out of
 * order, never hides a committed version.
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
  /** Revision of manifest.json as read or last written: the pointer is replaced only from that one. */
  private manifestRevision: string | undefined
  /** The version manifest.json names as read or last written. */
  private pointerVersion = 0
  /** Shared writers: this writer's id (in writers/ and in its shard names); undefined when exclusive. */
  readonly writerId: string | undefined
  private sharedShards = 0

  private constructor(dir: string, image: ImageSpec, split: SplitFractions, manifest: DatasetManifest | undefined, writerId: string | undefined) {
    this.dir = dir
    this.image = image
    this.split = split
    this.committed = manifest
    this.classNames = [...(manifest?.classes ?? [])]
    this.writerId = writerId
  }

  /** True for a shared writer (see StoreOpenOptions). */
  get shared(): boolean {
    return this.writerId !== undefined
  }

  /** Opens (creating if needed) the store in `dir` for an ingest with this image spec and split rule. */
  static async open(dir: string, image: ImageSpec, split: SplitFractions, options: StoreOpenOptions = {}): Promise<DatasetStore> {
    const root = resolveLocation(dir)
    for (const sub of [SHARDS_DIR, MANIFESTS_DIR, ...(options.shared ? [WRITERS_DIR] : [])]) {
      const folder = joinPath(root, sub)
      await accessing(root, folder, () => makeDir(folder))
    }
    // Locked (or registered) before the manifest is read: another writer committing in between
    // would otherwise make its new shards look like strays to delete.
    const writerId = options.shared ? randomBytes(4).toString('hex') : undefined
    if (writerId === undefined) await accessing(root, joinPath(root, '.lock'), () => lock(root))
    else await accessing(root, joinPath(root, WRITERS_DIR, writerId), () => register(root, writerId))
    try {
      const store = await DatasetStore.load(root, image, split, writerId)
      store.locked = true
      return store
    } catch (error) {
      await (writerId === undefined ? unlock(root) : unregister(root, writerId))
      throw error
    }
  }

  private static async load(root: string, image: ImageSpec, split: SplitFractions, writerId: string | undefined): Promise<DatasetStore> {
    const latest = await readLatestManifest(root)
    const manifest = latest.manifest
    if (manifest) checkCompatible(manifest, root, image, split)
    const store = new DatasetStore(root, image, split, manifest, writerId)
    store.manifestRevision = latest.pointerRevision
    store.pointerVersion = latest.pointerVersion
    await (writerId === undefined ? store.removeStrays() : store.removeSharedStrays())
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

  /** The index of class `name`, appending it if new. A shared writer calls ensureClass() first. */
  classIndex(name: string): number {
    let index = this.classNames.indexOf(name)
    if (index === -1) {
      if (this.shared) throw new Error(`classIndex: class "${name}" is not in the manifest yet (ensureClass)`)
      index = this.classNames.push(name) - 1
    }
    return index
  }

  /**
   * Makes sure class `name` has an index. A shared writer cannot number a new class on its own (two
   * writers would give two classes the same index): it commits a version that only adds the class,
   * unless another writer's version already did; either way all writers agree on the index.
   */
  async ensureClass(name: string): Promise<number> {
    const index = this.classNames.indexOf(name)
    if (index !== -1 || !this.shared) return this.classIndex(name)
    for (let attempt = 0; ; attempt++) {
      await this.catchUp()
      const known = this.classNames.indexOf(name)
      if (known !== -1) return known
      const now = new Date().toISOString()
      const previous = this.committed ?? emptyManifest(this.image, this.split, [], now)
      const classes = [...previous.classes, name]
      const version = previous.version + 1
      const counts = emptyCounts(classes)
      for (const split of SPLITS) Object.assign(counts[split], previous.counts[split])
      const manifest: DatasetManifest = {
        ...previous,
        version,
        updatedAt: now,
        classes,
        counts,
        history: [...previous.history, {version, at: now, accepted: 0, duplicates: 0, rejected: 0, sources: []}],
      }
      // manifest.json is left to the next commit of shards: readers follow the versions past it.
      if (await this.publish(manifest, undefined, false)) {
        this.classNames = [...classes]
        return classes.length - 1
      }
      if (attempt >= MAX_COMMIT_ATTEMPTS) throw this.conflict(version)
    }
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
    // Numbered synchronously, so concurrent shards get distinct names; a shared writer's carry its
    // id, so that no two writers can pick the same name (the version it lands in is not known yet).
    const base = this.shared ? `${split}-w${this.writerId}-${pad(this.sharedShards++, 6)}` : `${split}-${pad(addedIn, 6)}-${pad(this.shardNumber[split]++, 5)}`
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
   * Publishes the shards written since the last commit as the next manifest version. With nothing
   * written the manifest is left as it is (same version), so re-ingesting the same data is a no-op.
   * A shared writer that finds the version taken by another writer catches up with it and retries
   * with its shards, counts and stream positions merged in (refused with INGEST_FENCED when
   * `extra.claims` no longer hold); an exclusive one fails with DATASET_CONFLICT (someone got past
   * the lock).
   */
  async commit(history: Omit<HistoryEntry, 'version' | 'at'>, extra: CommitExtra = {}): Promise<DatasetManifest> {
    await this.flushQuarantine()
    for (let attempt = 0; ; attempt++) {
      const now = new Date().toISOString()
      if (this.pending.length === 0) return this.committed ?? emptyManifest(this.image, this.split, this.classNames, now)
      const moved = movedClaims(this.committed?.sources, extra.claims)
      if (moved.length > 0) throw fencedError(this.dir, moved)
      const sources = extra.sources === undefined ? undefined : mergeCheckpoints(this.committed?.sources, extra.sources)
      const manifest = nextManifest({
        previous: this.committed,
        image: this.image,
        split: this.split,
        classes: this.classNames,
        keys: this.keys.keys(),
        shards: this.pending,
        counts: this.pendingCounts,
        history,
        sources,
        now,
      })
      if (await this.publish(manifest, () => this.clearPending())) return manifest
      if (attempt >= MAX_COMMIT_ATTEMPTS) throw this.conflict(manifest.version)
      await this.catchUp()
    }
  }

  /** The pending shards are published: nothing of them is this writer's to discard any more. */
  private clearPending(): void {
    this.pending = []
    this.pendingKeys = []
    this.pendingCounts.clear()
    for (const split of SPLITS) this.shardNumber[split] = 0
  }

  /**
   * Commits `manifest` (the version after this.committed) by creating its versioned file, then
   * points manifest.json at it. False when another writer committed that version first (for an
   * exclusive writer that is an error, thrown). Once the version file exists the commit is done:
   * `published` runs, and a failure to replace manifest.json costs readers one more probe, no data.
   */
  private async publish(manifest: DatasetManifest, published?: () => void, pointer = true): Promise<boolean> {
    const text = JSON.stringify(manifest, null, 2) + '\n'
    const file = versionFile(this.dir, manifest.version)
    try {
      await accessing(this.dir, file, () => writeFileAtomic(file, text, {createOnly: true}))
    } catch (error) {
      if (!lostRace(error)) throw error
      if (!this.shared) throw this.conflict(manifest.version, error)
      return false
    }
    this.committed = manifest
    published?.()
    if (pointer) await this.updatePointer(manifest, text)
    return true
  }

  /**
   * Replaces manifest.json by the version just committed, unless it already names that or a later
   * one: a compare-and-swap on its revision (exact on Cloud Storage and S3, checked just before
   * the rename on a local disk, where a lost race at worst leaves it naming an older version, which
   * readers follow past).
   */
  private async updatePointer(manifest: DatasetManifest, text: string): Promise<void> {
    const file = joinPath(this.dir, MANIFEST)
    for (let attempt = 0; attempt < 10; attempt++) {
      if (this.pointerVersion >= manifest.version) return
      try {
        this.manifestRevision = await writeFileAtomic(file, text, this.manifestRevision === undefined ? {createOnly: true} : {ifRevision: this.manifestRevision})
        this.pointerVersion = manifest.version
        return
      } catch (error) {
        const code = errorCode(error)
        if (code !== 'EEXIST' && code !== 'ECONFLICT') throw error
      }
      const read = await readVersioned(file)
      this.manifestRevision = read?.revision
      const named = read === undefined ? 0 : parseManifest(read.data.toString('utf8'), file).version
      this.pointerVersion = typeof named === 'number' ? named : 0
    }
  }

  /**
   * Follows the versions other writers committed after this.committed: their shards' keys join
   * the dedupe set, their classes, counts and positions the next commit's base.
   */
  private async catchUp(): Promise<void> {
    for (;;) {
      const next = await followingVersion(this.dir, this.version)
      if (next === undefined) return
      checkCompatible(next, this.dir, this.image, this.split)
      const known = this.committed?.shards ?? []
      if (next.shards.length < known.length || known.some((shard, i) => next.shards[i]!.file !== shard.file)) {
        throw corrupt(`manifest version ${next.version} of ${this.dir} does not keep the shards of version ${this.version}`, {store: this.dir})
      }
      await this.loadKeys(next.shards, known.length)
      // Our own classes were committed before use (ensureClass), so the manifest's list holds them.
      this.classNames = [...next.classes]
      this.committed = next
    }
  }

  /**
   * A shared writer catches up with the latest version and returns the claimed partitions another
   * writer recorded since (see movedClaims): checked before a commit's shards are closed, so that
   * their records can still be dropped. Always none for an exclusive writer.
   */
  async movedClaims(claims: SourceClaims | undefined): Promise<MovedPartition[]> {
    if (!this.shared || claims === undefined) return []
    await this.catchUp()
    return movedClaims(this.committed?.sources, claims)
  }

  /** The latest committed stream positions (other writers' commits included), for a partition's new owner. */
  async latestSources(): Promise<SourceCheckpoints | undefined> {
    return (await readLatestManifest(this.dir)).manifest?.sources
  }

  private conflict(version: number, cause?: unknown): UserError {
    return new UserError(`another writer committed to the dataset store ${this.dir} while this ingest ran; version ${version} was not published`, {
      code: 'DATASET_CONFLICT',
      exit: 'data',
      cause,
      details: {store: this.dir},
      suggestions: ['Run `ml ingest` again: it continues from the other writer\'s version and skips what is already stored.'],
    })
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

  /** Releases the writer lock (or registration). Uncommitted shards are left for a later open() to clean up. */
  async close(): Promise<void> {
    if (!this.locked) return
    this.locked = false
    await (this.writerId === undefined ? unlock(this.dir) : unregister(this.dir, this.writerId))
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

  /**
   * A shared writer's cleanup: only what writers known to be gone left (see deadWriters), and temp
   * files of dead processes. The dead are listed before the manifest is read again: a writer seen
   * dead commits nothing more, so every shard it did commit is in the manifest read after.
   */
  private async removeSharedStrays(): Promise<void> {
    const dead = await deadWriters(this.dir)
    const deadTmp = (name: string) => {
      const pid = /\.tmp-(\d+)(-[0-9a-f]+)?$/.exec(name)?.[1]
      return pid !== undefined && Number(pid) !== process.pid && !isAlive(Number(pid))
    }
    for (const sub of ['', MANIFESTS_DIR]) {
      const folder = sub === '' ? this.dir : joinPath(this.dir, sub)
      for (const name of await listNames(folder)) if (deadTmp(name)) await remove(joinPath(folder, name))
    }
    const latest = (await readLatestManifest(this.dir)).manifest
    const referenced = new Set<string>()
    for (const shard of latest?.shards ?? []) {
      referenced.add(path.posix.basename(shard.file))
      referenced.add(path.posix.basename(shard.keysFile))
      referenced.add(path.posix.basename(originsFileOf(shard.keysFile)))
    }
    for (const name of await listNames(joinPath(this.dir, SHARDS_DIR))) {
      if (referenced.has(name)) continue
      const writer = SHARED_SHARD.exec(name)?.[1]
      // A name without a writer id is an exclusive writer's, and none is running (we registered).
      if (writer === undefined ? !deadTmp(name) && !/\.tmp-/.test(name) : dead.has(writer)) await remove(joinPath(this.dir, SHARDS_DIR, name))
      else if (deadTmp(name)) await remove(joinPath(this.dir, SHARDS_DIR, name))
    }
    for (const id of dead) await unregister(this.dir, id)
  }

  /** Reads the key lists of `shards` from index `from` on into the dedupe set. */
  private async loadKeys(shards: readonly ShardInfo[] = this.committed?.shards ?? [], from = 0): Promise<void> {
    // Read a few ahead: on Cloud Storage each key list is a request, and a store has many shards.
    const AHEAD = 16
    const texts: Array<Promise<string | undefined>> = []
    const prefetch = (i: number) => {
      if (i >= shards.length) return
      texts[i] = readIfExists(joinPath(this.dir, shards[i]!.keysFile))
      // Marked as handled: when the loop stops early on a bad shard, reads still in flight may fail unseen.
      texts[i]!.catch(() => {})
    }
    for (let i = from; i < from + AHEAD; i++) prefetch(i)
    for (let i = from; i < shards.length; i++) {
      const shard = shards[i]!
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
