// The monitor's data side: scrapes every target (and the ingest and training run) once per tick, keeps
// the recent scrapes and a time series per figure for sparklines, and hands the renderer a frame.
import {predictionDrift, type DriftResult} from './drift.js'
import {ingestStats, type IngestStats} from './ingest-stats.js'
import {readRun, type RunSnapshot} from './run-follow.js'
import {scrape, type ScrapeResult} from './scrape.js'
import {serveStats, type TargetStats} from './serve-stats.js'
import {modelWindow} from './slo.js'

export interface CollectorOptions {
  targets: string[]
  ingest?: string
  /** A resolved run directory. */
  run?: string
  /** Sparkline span, seconds. */
  historySeconds: number
  /** Span of the drift figure, seconds. */
  windowSeconds: number
  token?: string
  timeoutMs?: number
  /** Training class shares: enables the drift column. */
  priors?: Record<string, number>
}

export interface Point {
  t: number
  v: number | null
}

export interface Frame {
  at: number
  /** When the first frame was taken: sparklines span only the time there is data for. */
  since?: number
  targets: TargetStats[]
  ingest?: IngestStats
  run?: RunSnapshot
  runError?: string
  /** PSI per `${target}\u0000${model}` over the last windowSeconds. */
  drift: Map<string, DriftResult>
}

export const seriesKey = (...parts: string[]) => parts.join('\u0000')

export class Collector {
  private readonly scrapes = new Map<string, ScrapeResult[]>()
  private lastIngest: ScrapeResult | undefined
  private since: number | undefined
  private readonly series = new Map<string, Point[]>()

  constructor(readonly options: CollectorOptions) {}

  /** Points of one figure within the history span (oldest first). */
  history(key: string): Point[] {
    return this.series.get(key) ?? []
  }

  private record(key: string, t: number, v: number | null): void {
    let points = this.series.get(key)
    if (points === undefined) this.series.set(key, (points = []))
    points.push({t, v})
    const cutoff = t - this.options.historySeconds * 1000
    while (points.length > 0 && points[0]!.t < cutoff) points.shift()
  }

  async tick(): Promise<Frame> {
    const {options} = this
    const [results, ingest, run] = await Promise.all([
      Promise.all(options.targets.map((t) => scrape(t, {timeoutMs: options.timeoutMs, token: options.token}))),
      options.ingest ? scrape(options.ingest, {timeoutMs: options.timeoutMs, token: options.token}) : Promise.resolve(undefined),
      options.run ? readRun(options.run).then((r) => ({r}), (error: Error) => ({error: error.message})) : Promise.resolve(undefined),
    ])
    const at = Date.now()
    this.since ??= at
    const frame: Frame = {at, since: this.since, targets: [], drift: new Map()}
    results.forEach((result) => {
      const kept = this.scrapes.get(result.target) ?? []
      const stats = serveStats(result, kept.at(-1))
      frame.targets.push(stats)
      if (result.expo) {
        kept.push(result)
        const cutoff = result.at - Math.max(options.windowSeconds, options.historySeconds) * 1000 - 1000
        while (kept.length > 1 && kept[0]!.at < cutoff) kept.shift()
        this.scrapes.set(result.target, kept)
      }
      this.record(seriesKey(result.target, 'cpu'), at, stats.process.cpuCores)
      this.record(seriesKey(result.target, 'rss'), at, stats.process.residentBytes)
      for (const m of stats.models) {
        const w = m.window
        this.record(seriesKey(result.target, m.model, m.version, 'rps'), at, w ? w.requestsPerSec : null)
        this.record(seriesKey(result.target, m.model, m.version, 'p99'), at, w ? w.latencyMs.p99 : null)
        this.record(seriesKey(result.target, m.model, m.version, 'errors'), at, w ? w.errorRate : null)
      }
      if (options.priors && result.expo) {
        // The oldest kept scrape inside the window is the baseline of the drift figure.
        const from = kept.find((s) => s.at >= result.at - options.windowSeconds * 1000) ?? kept[0]!
        if (from !== result) {
          for (const model of new Set(stats.models.map((m) => m.model))) {
            const w = modelWindow([[from.expo!, result.expo]], model)
            frame.drift.set(seriesKey(result.target, model), predictionDrift(options.priors, w.predictions))
          }
        }
      }
    })
    if (ingest) {
      frame.ingest = ingestStats(ingest, this.lastIngest)
      if (ingest.expo) this.lastIngest = ingest
      this.record(seriesKey('ingest', 'rate'), at, frame.ingest.recordsPerSec)
      this.record(seriesKey('ingest', 'lag'), at, frame.ingest.lag)
    }
    if (run) {
      if ('r' in run) frame.run = run.r
      else frame.runError = run.error
    }
    return frame
  }
}
