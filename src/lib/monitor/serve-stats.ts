// What a dashboard row shows for an `ml serve` target: rates, error ratio, latency quantiles and batch
// sizes over the window between two scrapes (and since start), plus queue, process and drift figures.
import {counterIncrease, EMPTY_HISTOGRAM as EMPTY, histogramIncrease, histogramMean, histogramQuantile, histogramsBy, type HistogramData} from './histogram.js'
import {CLIENT_ERROR, EVENT_LOOP_SAMPLE_MS, MODEL_PROTOCOLS, PROCESS, SERVE, SERVER_ERROR} from '../metric-names.js'
import {groupKey, has, labelsMatch, sumOf, type Exposition} from './prom-text.js'
import type {ScrapeResult} from './scrape.js'

export interface LatencySummary {
  /** Milliseconds; null when nothing was observed. */
  p50: number | null
  p95: number | null
  p99: number | null
  mean: number | null
}

export interface TrafficStats {
  requests: number
  /** 5xx answers. */
  errors: number
  /** 4xx answers. */
  clientErrors: number
  /** errors / requests; null without requests. */
  errorRate: number | null
  latencyMs: LatencySummary
  queueMs: LatencySummary
  inferenceMs: LatencySummary
  /** Mean images per executed batch. */
  avgBatchSize: number | null
  images: number
  /** Top-1 predictions per class name. */
  predictions: Record<string, number>
  /** Mean brightness (0..1) and original size of the images received. */
  input: {brightness: number | null; width: number | null; height: number | null}
}

export interface WindowStats extends TrafficStats {
  seconds: number
  requestsPerSec: number
  errorsPerSec: number
  imagesPerSec: number
}

export interface ModelStats {
  model: string
  /** '' for requests that failed before a version was chosen (unknown model, none ready). */
  version: string
  ready: boolean | null
  queueDepth: number
  /** Between the previous scrape and this one; null on the first scrape. */
  window: WindowStats | null
  /** Since the server started. */
  total: TrafficStats
}

export interface ProcessStats {
  /** CPU cores in use over the window (1 = one core busy); null on the first scrape. */
  cpuCores: number | null
  residentBytes: number | null
  heapUsedBytes: number | null
  eventLoopLagP99Ms: number | null
  uptimeSeconds: number | null
}

export interface TargetStats {
  target: string
  url: string
  up: boolean
  error?: string
  at: number
  scrapeMs: number
  inFlight: number | null
  process: ProcessStats
  models: ModelStats[]
}

const MS = 1000
const finite = (v: number): number | null => (Number.isFinite(v) ? v : null)
const ms = (seconds: number): number | null => finite(seconds * MS)

export function latencySummary(h: HistogramData, unit = MS): LatencySummary {
  const q = (p: number) => finite(histogramQuantile(p, h.buckets) * unit)
  return {p50: q(0.5), p95: q(0.95), p99: q(0.99), mean: finite(histogramMean(h) * unit)}
}

const versionKeys = ['model', 'version'] as const

/** Counter values of `name` by model and version (only series with a model). */
function countersBy(expo: Exposition, name: string, match: Record<string, string | RegExp>, extra?: string): Map<string, number> {
  const out = new Map<string, number>()
  const keys = extra ? [...versionKeys, extra] : versionKeys
  for (const s of expo.samples) {
    if (s.name !== name || !s.labels.model || !labelsMatch(s.labels, match)) continue
    const key = groupKey(s.labels, keys)
    out.set(key, (out.get(key) ?? 0) + s.value)
  }
  return out
}

interface Raw {
  requests: Map<string, number>
  errors: Map<string, number>
  clientErrors: Map<string, number>
  latency: Map<string, HistogramData>
  queue: Map<string, HistogramData>
  inference: Map<string, HistogramData>
  batch: Map<string, HistogramData>
  brightness: Map<string, HistogramData>
  width: Map<string, HistogramData>
  height: Map<string, HistogramData>
  /** key = model, version, class. */
  predictions: Map<string, number>
}

function histMap(expo: Exposition, name: string, match?: Record<string, string | RegExp>): Map<string, HistogramData> {
  const out = new Map<string, HistogramData>()
  for (const [key, g] of histogramsBy(expo, name, versionKeys, match)) if (g.labels.model) out.set(key, g.data)
  return out
}

function raw(expo: Exposition): Raw {
  const model = {protocol: MODEL_PROTOCOLS}
  return {
    requests: countersBy(expo, SERVE.requests, model),
    errors: countersBy(expo, SERVE.requests, {...model, status: SERVER_ERROR}),
    clientErrors: countersBy(expo, SERVE.requests, {...model, status: CLIENT_ERROR}),
    latency: histMap(expo, SERVE.requestDuration, model),
    queue: histMap(expo, SERVE.queueDuration),
    inference: histMap(expo, SERVE.inferenceDuration),
    batch: histMap(expo, SERVE.batchSize),
    brightness: histMap(expo, SERVE.inputBrightness),
    width: histMap(expo, SERVE.inputWidth),
    height: histMap(expo, SERVE.inputHeight),
    predictions: countersBy(expo, SERVE.predictions, {}, 'class'),
  }
}

function traffic(r: Raw, key: string, before?: Raw): TrafficStats {
  const inc = (m: keyof Pick<Raw, 'requests' | 'errors' | 'clientErrors'>) => counterIncrease(before?.[m].get(key), r[m].get(key) ?? 0)
  const hist = (m: keyof Pick<Raw, 'latency' | 'queue' | 'inference' | 'batch' | 'brightness' | 'width' | 'height'>) =>
    before ? histogramIncrease(before[m].get(key), r[m].get(key) ?? EMPTY) : (r[m].get(key) ?? EMPTY)
  const requests = inc('requests')
  const errors = inc('errors')
  const batch = hist('batch')
  const predictions: Record<string, number> = {}
  const prefix = key + '\u0000class='
  for (const [k, v] of r.predictions) {
    if (!k.startsWith(prefix)) continue
    predictions[k.slice(prefix.length)] = counterIncrease(before?.predictions.get(k), v)
  }
  return {
    requests,
    errors,
    clientErrors: inc('clientErrors'),
    errorRate: requests > 0 ? errors / requests : null,
    latencyMs: latencySummary(hist('latency')),
    queueMs: latencySummary(hist('queue')),
    inferenceMs: latencySummary(hist('inference')),
    avgBatchSize: finite(histogramMean(batch)),
    images: batch.sum,
    predictions,
    input: {brightness: finite(histogramMean(hist('brightness'))), width: finite(histogramMean(hist('width'))), height: finite(histogramMean(hist('height')))},
  }
}

/**
 * Figures for one target from its latest scrape and (for rates and windowed quantiles) the one
 * before. A failed scrape gives `up: false` and no models.
 */
export function serveStats(current: ScrapeResult, previous?: ScrapeResult): TargetStats {
  const base = {target: current.target, url: current.url, at: current.at, scrapeMs: current.durationMs}
  const noProcess: ProcessStats = {cpuCores: null, residentBytes: null, heapUsedBytes: null, eventLoopLagP99Ms: null, uptimeSeconds: null}
  if (!current.expo) return {...base, up: false, error: current.error, inFlight: null, process: noProcess, models: []}
  const expo = current.expo
  const before = previous?.expo
  const seconds = before ? (current.at - previous!.at) / 1000 : 0
  const r = raw(expo)
  const b = before && seconds > 0 ? raw(before) : undefined

  const keys = new Map<string, {model: string; version: string}>()
  const note = (labels: Record<string, string>) => {
    if (labels.model) keys.set(groupKey(labels, versionKeys), {model: labels.model, version: labels.version ?? ''})
  }
  for (const s of expo.samples) {
    if (s.name === SERVE.modelReady || s.name === SERVE.queueDepth) note(s.labels)
    else if (s.name === SERVE.requests && labelsMatch(s.labels, {protocol: MODEL_PROTOCOLS})) note(s.labels)
  }
  const models: ModelStats[] = []
  for (const [key, {model, version}] of keys) {
    const readySamples = expo.samples.filter((s) => s.name === SERVE.modelReady && s.labels.model === model && s.labels.version === version)
    const total = traffic(r, key)
    let window: WindowStats | null = null
    if (b) {
      const w = traffic(r, key, b)
      window = {...w, seconds, requestsPerSec: w.requests / seconds, errorsPerSec: w.errors / seconds, imagesPerSec: w.images / seconds}
    }
    models.push({
      model,
      version,
      ready: readySamples.length ? readySamples.some((s) => s.value > 0) : null,
      queueDepth: sumOf(expo, SERVE.queueDepth, {model, version}),
      window,
      total,
    })
  }
  models.sort((x, y) => x.model.localeCompare(y.model) || Number(x.version || 0) - Number(y.version || 0) || x.version.localeCompare(y.version))

  const gauge = (name: string) => (has(expo, name) ? sumOf(expo, name) : null)
  const cpuNow = gauge(PROCESS.cpuSeconds)
  const cpuBefore = before && has(before, PROCESS.cpuSeconds) ? sumOf(before, PROCESS.cpuSeconds) : null
  const start = gauge(PROCESS.startTime)
  const lag = gauge(PROCESS.eventLoopLagP99)
  return {
    ...base,
    up: true,
    inFlight: gauge(SERVE.inFlight),
    process: {
      cpuCores: cpuNow !== null && cpuBefore !== null && seconds > 0 ? counterIncrease(cpuBefore, cpuNow) / seconds : null,
      residentBytes: gauge(PROCESS.residentBytes),
      heapUsedBytes: gauge(PROCESS.heapUsedBytes),
      // The gauge includes the sampling interval (an idle loop reads ~10 ms): the lag is what exceeds it.
      eventLoopLagP99Ms: lag === null ? null : ms(Math.max(0, lag - EVENT_LOOP_SAMPLE_MS / MS)),
      uptimeSeconds: start === null ? null : Math.max(0, current.at / 1000 - start),
    },
    models,
  }
}
