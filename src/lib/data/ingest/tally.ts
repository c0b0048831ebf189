// The counts of an ingest run and its progress reports.
import {performance} from 'node:perf_hooks'
import type {IngestProgress} from './types.js'

/** Progress is reported at most this often (ms), apart from the first item, shard writes and the end. */
const PROGRESS_INTERVAL_MS = 100

export interface Counts {
  seen: number
  accepted: number
  rejected: number
  duplicates: number
  shards: number
}

export class Tally implements Counts {
  seen = 0
  accepted = 0
  rejected = 0
  duplicates = 0
  /** Shards written by this run. */
  shards = 0
  readonly rejectedByReason: Record<string, number> = {}
  /** Items the sources hold, once known. */
  total: number | undefined
  private lastReport = Number.NEGATIVE_INFINITY

  constructor(
    private readonly started: number,
    private readonly onProgress: ((p: IngestProgress) => void) | undefined,
  ) {}

  reject(reason: string): void {
    this.rejected++
    this.rejectedByReason[reason] = (this.rejectedByReason[reason] ?? 0) + 1
  }

  /** An accepted item its source took back before it was committed. */
  withdraw(): void {
    this.accepted--
    this.seen--
  }

  counts(): Counts {
    return {seen: this.seen, accepted: this.accepted, rejected: this.rejected, duplicates: this.duplicates, shards: this.shards}
  }

  imagesPerSec(): number {
    const seconds = (performance.now() - this.started) / 1000
    return seconds > 0 ? this.seen / seconds : 0
  }

  /** Reports progress, unless the last report was under PROGRESS_INTERVAL_MS ago and `force` is false. */
  report(force: boolean): void {
    if (!this.onProgress) return
    const now = performance.now()
    if (!force && now - this.lastReport < PROGRESS_INTERVAL_MS) return
    this.lastReport = now
    this.onProgress({...this.counts(), ...(this.total === undefined ? {} : {total: this.total}), imagesPerSec: this.imagesPerSec()})
  }
}
