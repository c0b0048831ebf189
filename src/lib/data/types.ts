// The dataset store's data model: the contract between ingest (which writes it) and training,
// evaluation and export (which read it). Shards are TFRecord files of tf.train.Example.
import type {ImageSpec, SplitName} from '../config/schema.js'

export type {SplitName} from '../config/schema.js'

/** One accepted image, normalised to the dataset's ImageSpec and ready to be written to a shard. */
export interface ImageRecord {
  /** sha256 (hex) of the source bytes: the dedupe key, and the input of the split hash. */
  key: string
  /** Class index into DatasetManifest.classes (`image/class/label`). */
  label: number
  /** Class name (`image/class/text`). */
  text: string
  /** The normalised image, PNG-encoded (`image/encoded`, `image/format` = "png"). */
  encoded: Uint8Array
  height: number
  width: number
  channels: number
  /** Where the image came from: a file path, gs:// URI or topic/partition/offset (`image/source_id`). */
  origin?: string
}

/** Bytes that are not held whole but written straight into their destination (a shard's write buffer). */
export interface DeferredBytes {
  readonly byteLength: number
  /** Writes all `byteLength` bytes into `out` at `offset`. */
  writeTo(out: Uint8Array, offset: number): void
}

/** Bytes, whole or deferred. */
export type Bytes = Uint8Array | DeferredBytes

/** What a shard is written from: an ImageRecord whose PNG may be deferred. */
export interface RecordToWrite extends Omit<ImageRecord, 'encoded'> {
  encoded: Bytes
}

/** A committed, immutable shard file. */
export interface ShardInfo {
  /** Path relative to the store directory, e.g. `shards/train-000003-00000.tfrecord` (split, manifest version that added it, number within that version). */
  file: string
  split: SplitName
  /** Number of examples in the shard. */
  count: number
  bytes: number
  /**
   * CRC-32C of the whole file, as base64 of its 4 big-endian bytes: the form in which Cloud Storage
   * reports an object's checksum (`gcloud storage hash`, the object's crc32c metadata), so a shard
   * in a bucket can be checked against it without reading it. Set on every shard written now.
   */
  crc32c?: string
  /** sha256 (hex) of the whole file: the checksum of shards written before crc32c; still verified. */
  sha256?: string
  /** Path (relative to the store) of the shard's key list: one dedupe key per line, same order. */
  keysFile: string
  /** The manifest version that added this shard. */
  addedIn: number
}

export type ClassCounts = Record<string, number>

/** manifest.json of a dataset store. Written atomically; a shard not listed here does not exist. */
export interface DatasetManifest {
  format: 'ml-dataset'
  formatVersion: 1
  /** Increments on every ingest that adds data; manifests/v<version>.json keeps each one. */
  version: number
  createdAt: string
  updatedAt: string
  image: ImageSpec
  /** Class names; a class's index never changes once assigned (new classes are appended). */
  classes: string[]
  /** Examples per split and class name. */
  counts: Record<SplitName, ClassCounts>
  /** Total examples over all splits. */
  total: number
  shards: ShardInfo[]
  /** The split rule, so that later ingests split new images the same way. */
  split: {validation: number; test: number; seed: number}
  /** sha256 over the sorted dedupe keys of everything stored: identifies the dataset's content. */
  fingerprint: string
  /** Per-ingest history: what each version added. */
  history: Array<{version: number; at: string; accepted: number; duplicates: number; rejected: number; sources: string[]}>
  /** Positions of streaming sources that this version includes everything before. */
  sources?: SourceCheckpoints
}

/**
 * Stream positions recorded with a commit. kafka[groupId][topic][partition] is the next offset
 * (decimal string, int64): every message below it is in this version or was rejected, so a
 * redelivered one (after a crash between this commit and the Kafka offset commit) is skipped.
 */
export interface SourceCheckpoints {
  kafka?: Record<string, Record<string, Record<string, string>>>
  /**
   * kinesis[stream][shardId]: the sequence number of the last record in this version (or rejected),
   * and closed once a shard ended by a reshard was read to its end (see sources/kinesis.ts).
   */
  kinesis?: Record<string, Record<string, {sequenceNumber?: string; closed?: boolean}>>
}

/**
 * What a committing consumer-group member believes the latest manifest records for the partitions
 * it consumes: kafka[groupId][topic][partition] is the next offset as that member last read or
 * wrote it (null: no position recorded). A commit whose claims differ from the latest manifest is
 * refused (INGEST_FENCED), so a member that lost a partition cannot record it.
 */
export interface SourceClaims {
  kafka?: Record<string, Record<string, Record<string, string | null>>>
}

/**
 * A dropped duplicate (duplicates.jsonl in the store): `origin` held the same bytes (sha256 `key`) as
 * `duplicateOf`, the copy kept (or, for a copy stored before shards recorded origins, `storedIn`).
 */
export interface DuplicateEntry {
  origin: string
  key: string
  duplicateOf?: string
  /** The shard holding the kept copy, when it was stored by an earlier run. */
  storedIn?: string
  at: string
}

/** A quarantined input: kept out of the dataset with the reason (quarantine.jsonl in the store). */
export interface QuarantineEntry {
  origin: string
  /** Short machine-readable reason, e.g. `corrupt`, `empty`, `too-large`, `unsupported-format`. */
  reason: string
  detail: string
  at: string
}

/** A split decoded into memory for training/evaluation: uint8 pixels, NHWC, row-major. */
export interface DecodedSplit {
  split: SplitName
  count: number
  height: number
  width: number
  channels: number
  /** count * height * width * channels bytes. */
  pixels: Uint8Array
  labels: Int32Array
  keys: string[]
}
