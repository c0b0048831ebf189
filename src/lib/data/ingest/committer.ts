// The shard committer: accepted records go into an open shard of their split at once (memory stays
// flat and writing overlaps decoding); full shards are closed; a commit closes them all, records
// the stream positions and publishes the next dataset version, and only then acknowledges the
// streams upstream.
import {SPLITS, type SplitName} from '../../config/schema.js'
import {fencedMoves, mergeCheckpoints, mergeClaims} from '../checkpoints.js'
import type {SourceItem, SourceStream} from '../sources/types.js'
import type {DatasetStore, ShardWriter} from '../store.js'
import type {DatasetManifest, RecordToWrite, SourceCheckpoints, SourceClaims} from '../types.js'
import type {Counts, Tally} from './tally.js'
import type {IngestObserver} from './types.js'

interface Buffered {
  record: RecordToWrite
  item: SourceItem
}

export interface CommitterOptions {
  /** Stream sources feed this run: shards keep their records until committed (see add()). */
  streaming: boolean
  shardSize: number
  /** The sources as the manifest's history names them. */
  sources: string[]
  observer?: IngestObserver
  /** A record left the run because its source withdrew it. */
  forget(key: string): void
}

export class ShardCommitter {
  /** Stream sources, acknowledged after each commit. */
  readonly streams: SourceStream[] = []
  private readonly open: Partial<Record<SplitName, ShardWriter>> = {}
  private buffers: Record<SplitName, Buffered[]> = {train: [], validation: [], test: []}
  /**
   * Streams: the records closed into shards by the commit under way, kept until the manifest holds
   * them, so that a commit fenced at the last moment can write the ones still ours again.
   */
  private written: Array<Buffered & {split: SplitName}> = []
  private shardsWritten = 0
  private checkpoints: SourceCheckpoints | undefined
  /** The tally as of the last commit: history counts what each version added. */
  private readonly atCommit: Counts = {seen: 0, accepted: 0, duplicates: 0, rejected: 0, shards: 0}

  constructor(
    private readonly store: DatasetStore,
    private readonly tally: Tally,
    private readonly options: CommitterOptions,
  ) {
    this.checkpoints = store.manifest?.sources
  }

  /** Stream positions the last commit recorded (or the store held at start). */
  get committedCheckpoints(): SourceCheckpoints | undefined {
    return this.checkpoints
  }

  /** True when items were handled since the last commit. */
  get uncommitted(): boolean {
    return this.tally.seen !== this.atCommit.seen
  }

  /**
   * Appends an accepted record to the open shard of `split`; true when that shard is full. Stream
   * sources also keep a shard's records until it is committed, as a revoked partition may take
   * records back before then; a shard that lost some is then written again from the records kept
   * (rare: rebalances only).
   */
  async add(split: SplitName, record: RecordToWrite, item: SourceItem): Promise<boolean> {
    if (this.options.streaming) this.buffers[split].push({record, item})
    const shard = (this.open[split] ??= this.store.openShard(split))
    await shard.append(record)
    return shard.count >= this.options.shardSize
  }

  /** Drops the records whose source took them back (a revoked Kafka partition): their next owner stores them. */
  purge(): void {
    const before = this.tally.accepted
    for (const split of SPLITS) this.buffers[split] = this.buffers[split].filter((b) => this.keep(b))
    if (this.tally.accepted !== before) this.tally.report(true)
  }

  private keep({record, item}: Buffered): boolean {
    if (!item.withdrawn?.()) return true
    this.options.forget(record.key)
    this.tally.withdraw()
    return false
  }

  /** Closes the open shard of `split` (for a stream, rewritten when records were withdrawn). */
  async flush(split: SplitName): Promise<void> {
    const shard = this.open[split]
    delete this.open[split]
    const buffered = this.buffers[split]
    this.buffers[split] = []
    const records = buffered.filter((b) => this.keep(b))
    if (shard !== undefined) {
      // The shard holds every record appended since it opened; for a stream, none may have left.
      if (!this.options.streaming || shard.count === records.length) {
        await shard.close()
        this.shardWritten(split, records)
        return
      }
      await shard.abort()
    }
    if (records.length === 0) return
    await this.store.writeShard(split, records.map((r) => r.record))
    this.shardWritten(split, records)
  }

  async flushAll(): Promise<void> {
    for (const split of SPLITS) await this.flush(split)
  }

  private shardWritten(split: SplitName, records: Buffered[]): void {
    if (this.options.streaming) for (const b of records) this.written.push({split, ...b})
    this.shardsWritten++
    this.tally.shards++
    this.tally.report(true)
  }

  /**
   * Commits: stream checkpoints (dead letters flushed), every buffered record written, the
   * manifest recording both, and only then the offsets upstream. A crash between the last two
   * leaves the manifest ahead, which the stream recognises on restart.
   */
  async commit(fenced = 0): Promise<DatasetManifest> {
    const tally = this.tally
    // This commit's positions (of the partitions the streams consume now) and the positions they
    // expect the latest manifest to hold; the store merges them into what other writers committed.
    // Taken before the shards are closed: every buffered record is settled, and from here on a
    // stream keeps its partitions until committed() (see KafkaSourceStream.committing), so the
    // records that go into the shards are exactly those the positions cover.
    let positions: SourceCheckpoints | undefined
    let claims: SourceClaims | undefined
    for (let attempt = 0; ; attempt++) {
      positions = undefined
      claims = undefined
      for (const stream of this.streams) {
        positions = mergeCheckpoints(positions, await stream.checkpoint())
        const claimed = stream.claims?.()
        if (claimed) claims = mergeClaims(claims, claimed)
      }
      // Partitions another member recorded since they were read (a previous owner's commit landed
      // late, or this member lost them): their records are taken back while the shards are still
      // open, and the partitions read again from the recorded position. The store checks the
      // claims once more at the commit itself, where a loss is fatal (INGEST_FENCED).
      const moved = attempt < 10 ? await this.store.movedClaims(claims) : []
      if (moved.length === 0) break
      for (const stream of this.streams) stream.resync?.(moved)
    }
    await this.flushAll()
    let manifest: DatasetManifest
    try {
      manifest = await this.store.commit(
        {
          accepted: tally.accepted - this.atCommit.accepted,
          duplicates: tally.duplicates - this.atCommit.duplicates,
          rejected: tally.rejected - this.atCommit.rejected,
          sources: this.options.sources,
        },
        {...(positions === undefined ? {} : {sources: positions}), ...(claims === undefined ? {} : {claims})},
      )
    } catch (error) {
      const moved = fencedMoves(error)
      if (moved === undefined || fenced >= 10) throw error
      // Another member recorded some of these partitions between the check above and the commit:
      // the shards are dropped, those partitions read again from the recorded position, and the
      // records of the others written again.
      await this.store.discard()
      tally.shards -= this.shardsWritten
      this.shardsWritten = 0
      for (const stream of this.streams) stream.resync?.(moved)
      const again = this.written.filter((b) => this.keep(b))
      this.written = []
      for (const b of again) await this.add(b.split, b.record, b.item)
      return this.commit(fenced + 1)
    }
    this.written = []
    this.shardsWritten = 0
    // What the manifest holds now (a commit with no new shards publishes nothing, not even positions).
    this.checkpoints = manifest.sources
    for (const stream of this.streams) await stream.committed(manifest.sources ?? {})
    const shards = tally.shards - this.atCommit.shards
    if (shards > 0) {
      // History counts what each version added; with nothing new no version was written.
      Object.assign(this.atCommit, {accepted: tally.accepted, duplicates: tally.duplicates, rejected: tally.rejected, shards: tally.shards})
      this.options.observer?.committed?.({version: manifest.version, shards, total: manifest.total})
    }
    this.atCommit.seen = tally.seen
    return manifest
  }

  /** Closes the stream sources (after the last commit, or when the run failed). */
  async closeStreams(): Promise<void> {
    await Promise.allSettled(this.streams.map((stream) => stream.close()))
  }
}
