// The contract every image source keeps (folder, kafka, gcs and the ones to come): what an item is,
// how stream sources report durability, and what a source is given. Sources import this file, and
// index.ts dispatches to them, so that no source imports the dispatcher.
import type {SplitName} from '../../config/schema.js'
import type {MovedPartition} from '../checkpoints.js'
import type {SourceCheckpoints, SourceClaims} from '../types.js'

export type {SourceCheckpoints, SourceClaims} from '../types.js'

/** An item found to be over the size limit only when it was opened. */
export class TooLargeError extends Error {
  constructor(readonly size: number) {
    super(`${size} bytes`)
    this.name = 'TooLargeError'
  }
}

/** One image file offered by a source; nothing is read until read() is called. */
export interface SourceItem {
  /** Where the item came from: an absolute file path, a gs:// URI, topic/partition/offset... */
  origin: string
  /** The class name, or undefined when the source cannot tell (ingest quarantines it as no-label). */
  label: string | undefined
  /** Set when the source pins its items to one split; otherwise the content hash decides. */
  split?: SplitName
  /** Bytes, when known before reading: lets ingest reject a huge file without fetching it. */
  size?: number
  /**
   * Reads the whole file; rejects on an I/O error, and with TooLargeError when the item turns out
   * to be over `maxBytes` (checked before its content is read where the source can).
   */
  read(maxBytes?: number): Promise<Buffer>
  /** Set when the source already knows the item is unusable (a malformed message): it is quarantined as is. */
  problem?: {reason: string; detail: string}
  /** Stream sources: ingest has handled the item (stored, duplicate, rejected or withdrawn); called in source order. */
  settle?(): void
  /** Stream sources: the item was rejected for `reason` (e.g. to publish it to a dead-letter topic). */
  reject?(reason: string, detail: string): void
  /**
   * Stream sources: true once the source took the item back (its Kafka partition went to another
   * consumer, which will get it again). Ingest then drops it, even from records not yet written.
   */
  withdrawn?(): boolean
}

/** Watches stream sources; the Prometheus metrics of `ml ingest --follow` implement it. */
export interface StreamObserver {
  consumed?(topic: string, partition: number, count: number): void
  lag?(topic: string, partition: number, lag: number): void
  /** Consumption paused (true) because too many bytes are in flight, or resumed (false). */
  paused?(paused: boolean): void
  /**
   * Consumer groups: the partitions (per topic) this member consumes from now on, once the work of
   * those it lost has been dropped.
   */
  assigned?(assignment: Record<string, number[]>): void
  /** Something went wrong that the run survives (e.g. an offset commit failed). */
  warn?(message: string): void
}

export interface SourceContext {
  /** Relative source paths are resolved against this (the config file's folder). */
  baseDir: string
  /** Aborting stops the iteration early, without an error. */
  signal?: AbortSignal
  /** Position of the source in data.sources, so that errors name the config key. */
  index?: number
  /** Stream sources keep waiting for new items until `signal` aborts, instead of ending once caught up. */
  follow?: boolean
  /** Stream positions recorded by the last committed manifest. */
  checkpoints?: SourceCheckpoints
  observer?: StreamObserver
  /** Called, synchronously, when a stream withdraws items it handed out (see SourceItem.withdrawn). */
  onWithdrawn?: () => void
  /**
   * The stream positions of the latest committed manifest, which other members of a consumer group
   * may have moved since `checkpoints` was read: where a partition's new owner starts.
   */
  latestCheckpoints?: () => Promise<SourceCheckpoints | undefined>
}

/**
 * A source that never ends by itself or must hear back about durability (Kafka). Ingest commits in
 * this order: checkpoint() (side effects such as dead letters are flushed), the manifest with the
 * checkpoint, committed(checkpoint) (offsets acknowledged upstream), and finally close().
 */
export interface SourceStream extends AsyncIterable<SourceItem> {
  /**
   * Positions covering every item settled so far: of the partitions (shards) this stream consumes
   * now; the commit merges them into the latest manifest's, keeping everyone else's.
   */
  checkpoint(): Promise<SourceCheckpoints>
  /**
   * The positions the latest manifest must still hold for the commit of the last checkpoint() to
   * go ahead (consumer groups: see SourceClaims); none when the stream has no rival writers.
   */
  claims?(): SourceClaims
  /**
   * Partitions another writer recorded since this stream read them (see MovedPartition): the
   * stream takes back every item of theirs it handed out (withdrawn, ctx.onWithdrawn) and starts
   * them again from the recorded position, which its next checkpoint() then claims.
   */
  resync?(moved: readonly MovedPartition[]): void
  /** The manifest holding `checkpoint` is durable. */
  committed(checkpoint: SourceCheckpoints): Promise<void>
  close(): Promise<void>
}

export function isSourceStream(source: AsyncIterable<SourceItem>): source is SourceStream {
  return typeof (source as Partial<SourceStream>).checkpoint === 'function'
}
