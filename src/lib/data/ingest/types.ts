// What `ml ingest` is given and what it reports: options, progress, the summary and the observer.
import type {MlConfig} from '../../config/schema.js'
import type {StreamObserver} from '../sources/types.js'
import type {DatasetManifest} from '../types.js'

export interface IngestOptions {
  config: MlConfig
  /** Directory relative paths of the config (sources, store) are resolved against. */
  baseDir: string
  /**
   * Called after the first item, at most every 100 ms after that, after each shard written and at
   * the end; cheap enough to render a progress bar directly.
   */
  onProgress?: (p: IngestProgress) => void
  signal?: AbortSignal
  /**
   * Keep stream sources (Kafka) open for new items. Commits happen every data.shardSize records and
   * at least every rollIntervalMs; aborting `signal` ends the run cleanly with a last commit.
   * Without it, stream sources are read up to where they stood at start (also committing every
   * shardSize records), and an abort drops what was not committed yet.
   */
  follow?: boolean
  /** Follow mode: the longest a handled item waits to be committed (default: the sources' rollIntervalMs, else 10 s). */
  rollIntervalMs?: number
  /** Watches the run: the Prometheus metrics of follow mode. */
  observer?: IngestObserver
}

export interface IngestObserver extends StreamObserver {
  rejected?(reason: string): void
  /** A commit published `shards` new shards as dataset `version` (called after offsets were acknowledged). */
  committed?(info: {version: number; shards: number; total: number}): void
}

export interface IngestProgress {
  seen: number
  /** Items the sources hold, when known (a listing pass or countSource could tell). */
  total?: number
  accepted: number
  rejected: number
  duplicates: number
  imagesPerSec: number
  /** Shards written so far by this run (not yet committed). */
  shards: number
}

export interface IngestSummary {
  accepted: number
  rejected: number
  duplicates: number
  /** Classes in the dataset after the run. */
  classes: number
  /** Shards written by this run. */
  shards: number
  imagesPerSec: number
  datasetVersion: number
  /** Absolute path of the dataset store. */
  store: string
  /** Examples in the dataset after the run. */
  total: number
  counts: DatasetManifest['counts']
  rejectedByReason: Record<string, number>
}
