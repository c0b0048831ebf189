// Image sources: where ingest gets its files. Each source type streams SourceItems; this module
// holds their shared contract and dispatches on `type` (folder, kafka and gcs).
import type {SourceConfig, SplitName} from '../../config/schema.js'
import type {SourceCheckpoints} from '../types.js'
import {countFolderSource, openFolderSource} from './folder.js'
import {countGcsSource, openGcsSource} from './gcs.js'
import {openKafkaSource} from './kafka.js'
import {openKinesisSource} from './kinesis.js'
import {countS3Source, openS3Source} from './s3.js'

export type {SourceCheckpoints} from '../types.js'

/** One image file offered by a source; nothing is read until read() is called. */
/** An item found to be over the size limit only when it was opened. */
export class TooLargeError extends Error {
  constructor(readonly size: number) {
    super(`${size} bytes`)
    this.name = 'TooLargeError'
  }
}

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
}

/**
 * A source that never ends by itself or must hear back about durability (Kafka). Ingest commits in
 * this order: checkpoint() (side effects such as dead letters are flushed), the manifest with the
 * checkpoint, committed(checkpoint) (offsets acknowledged upstream), and finally close().
 */
export interface SourceStream extends AsyncIterable<SourceItem> {
  /** Positions covering every item settled so far, merged with what ctx.checkpoints held. */
  checkpoint(): Promise<SourceCheckpoints>
  /** The manifest holding `checkpoint` is durable. */
  committed(checkpoint: SourceCheckpoints): Promise<void>
  close(): Promise<void>
}

export function isSourceStream(source: AsyncIterable<SourceItem>): source is SourceStream {
  return typeof (source as Partial<SourceStream>).checkpoint === 'function'
}

/** Deep-merges checkpoints; `b` wins where both name the same partition. */
export function mergeCheckpoints(a: SourceCheckpoints | undefined, b: SourceCheckpoints): SourceCheckpoints {
  const kafka: NonNullable<SourceCheckpoints['kafka']> = {}
  for (const cp of [a?.kafka, b.kafka]) {
    for (const [group, topics] of Object.entries(cp ?? {})) {
      for (const [topic, partitions] of Object.entries(topics)) {
        kafka[group] ??= {}
        kafka[group][topic] = {...kafka[group][topic], ...partitions}
      }
    }
  }
  const merged: SourceCheckpoints = Object.keys(kafka).length > 0 ? {...a, ...b, kafka} : {...a, ...b}
  // Kinesis positions are per stream; each stream's own checkpoint already holds all its shards.
  if (a?.kinesis || b.kinesis) merged.kinesis = {...a?.kinesis, ...b.kinesis}
  return merged
}

/** Streams a source's items in a deterministic order. Errors about the source itself are UserErrors. */
export function openSource(source: SourceConfig, ctx: SourceContext): AsyncIterable<SourceItem> {
  switch (source.type) {
    case 'folder':
      return openFolderSource(source, ctx)
    case 'kafka':
      return openKafkaSource(source, ctx)
    case 'gcs':
      return openGcsSource(source, ctx)
    case 's3':
      return openS3Source(source, ctx)
    case 'kinesis':
      return openKinesisSource(source, ctx)
    default:
      return unknownSource(source)
  }
}

/** How many items openSource will yield, or undefined when that cannot be known cheaply. */
export async function countSource(source: SourceConfig, ctx: SourceContext): Promise<number | undefined> {
  switch (source.type) {
    case 'folder':
      return countFolderSource(source, ctx)
    case 'kafka':
      // The lag would be a count, but it moves while we consume; progress shows none.
      return undefined
    case 'gcs':
      return countGcsSource(source, ctx)
    case 's3':
      return countS3Source(source, ctx)
    case 'kinesis':
      return undefined
    default:
      return unknownSource(source)
  }
}

// The schema admits only known types, so reaching this is our bug; `never` makes adding a source
// type without handling it here a compile error.
function unknownSource(source: never): never {
  throw new Error(`unknown source type ${JSON.stringify((source as {type: unknown}).type)}`)
}
