// What the dashboard shows for `ml ingest --follow --metrics-port N` (Kafka): records consumed per
// second, consumer lag, rejects and dataset growth, from the names in src/lib/data/kafka-metrics.ts.
import {counterIncrease} from './histogram.js'
import {has, sumOf, type Exposition} from './prom-text.js'
import type {ScrapeResult} from './scrape.js'

export const INGEST = {
  /** Counter: messages taken from Kafka, by topic and partition. */
  consumed: 'ml_ingest_records_consumed_total',
  /** Gauge: messages after the last one consumed, by topic and partition. */
  lag: 'ml_ingest_kafka_lag',
  /** Counter: inputs quarantined, by reason. */
  rejects: 'ml_ingest_rejects_total',
  /** Counter: manifest commits that published shards. */
  commits: 'ml_ingest_shard_commits_total',
  /** Gauges of the last commit. */
  datasetVersion: 'ml_ingest_dataset_version',
  datasetExamples: 'ml_ingest_dataset_examples',
} as const

export interface IngestStats {
  target: string
  up: boolean
  error?: string
  at: number
  /** Messages consumed per second over the window; null on the first scrape. */
  recordsPerSec: number | null
  rejectsPerSec: number | null
  /** Summed over partitions; null when the endpoint exports no lag yet. */
  lag: number | null
  /** Rejects since start by reason. */
  rejectsByReason: Record<string, number>
  totals: {consumed: number; rejected: number; commits: number; datasetVersion: number | null; datasetExamples: number | null}
}

function totals(expo: Exposition): IngestStats['totals'] {
  const gauge = (name: string) => (has(expo, name) ? sumOf(expo, name) : null)
  return {
    consumed: sumOf(expo, INGEST.consumed),
    rejected: sumOf(expo, INGEST.rejects),
    commits: sumOf(expo, INGEST.commits),
    datasetVersion: gauge(INGEST.datasetVersion),
    datasetExamples: gauge(INGEST.datasetExamples),
  }
}

export function ingestStats(current: ScrapeResult, previous?: ScrapeResult): IngestStats {
  const base = {target: current.target, at: current.at}
  if (!current.expo) {
    return {...base, up: false, error: current.error, recordsPerSec: null, rejectsPerSec: null, lag: null, rejectsByReason: {}, totals: {consumed: 0, rejected: 0, commits: 0, datasetVersion: null, datasetExamples: null}}
  }
  const now = totals(current.expo)
  const before = previous?.expo ? totals(previous.expo) : undefined
  const seconds = previous?.expo ? (current.at - previous.at) / 1000 : 0
  const rate = (k: 'consumed' | 'rejected') => (before && seconds > 0 ? counterIncrease(before[k], now[k]) / seconds : null)
  const rejectsByReason: Record<string, number> = {}
  for (const s of current.expo.samples) if (s.name === INGEST.rejects) rejectsByReason[s.labels.reason ?? ''] = (rejectsByReason[s.labels.reason ?? ''] ?? 0) + s.value
  return {
    ...base,
    up: true,
    recordsPerSec: rate('consumed'),
    rejectsPerSec: rate('rejected'),
    lag: has(current.expo, INGEST.lag) ? sumOf(current.expo, INGEST.lag) : null,
    rejectsByReason,
    totals: now,
  }
}
