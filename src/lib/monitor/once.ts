// The scriptable modes: one snapshot (two scrapes an interval apart, for rates) as JSON, and the SLO
// check (two scrapes a window apart) whose report decides the exit code.
import {Collector, type CollectorOptions} from './collector.js'
import type {DriftResult} from './drift.js'
import type {IngestStats} from './ingest-stats.js'
import type {RunSnapshot} from './run-follow.js'
import {scrape} from './scrape.js'
import type {TargetStats} from './serve-stats.js'
import {evaluateSlo, type SloReport, type SloSettings} from './slo.js'

export interface Snapshot {
  at: string
  /** Seconds between the two scrapes that rates and window quantiles cover; 0 with a single scrape. */
  intervalSeconds: number
  targets: TargetStats[]
  ingest?: IngestStats
  run?: RunSnapshot
  runError?: string
  drift?: Array<{target: string; model: string} & DriftResult>
}

export async function takeSnapshot(options: CollectorOptions & {intervalMs: number}): Promise<Snapshot> {
  const collector = new Collector({...options, windowSeconds: Math.max(options.windowSeconds, options.intervalMs / 1000 + 1)})
  let frame = await collector.tick()
  const first = frame.at
  if (options.intervalMs > 0) {
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs))
    frame = await collector.tick()
  }
  const drift = [...frame.drift].map(([key, d]) => {
    const [target, model] = key.split('\u0000') as [string, string]
    return {target, model, ...d}
  })
  return {
    at: new Date(frame.at).toISOString(),
    intervalSeconds: options.intervalMs > 0 ? (frame.at - first) / 1000 : 0,
    targets: frame.targets,
    ...(frame.ingest ? {ingest: frame.ingest} : {}),
    ...(frame.run ? {run: frame.run} : {}),
    ...(frame.runError !== undefined ? {runError: frame.runError} : {}),
    ...(drift.length ? {drift} : {}),
  }
}

export interface CheckOptions {
  targets: string[]
  windowSeconds: number
  settings: SloSettings
  priors?: Record<string, number>
  token?: string
  timeoutMs?: number
  signal?: AbortSignal
}

/** Scrapes every target, waits the window, scrapes again and judges the objectives. */
export async function runCheck(options: CheckOptions): Promise<SloReport> {
  const all = () => Promise.all(options.targets.map((t) => scrape(t, {token: options.token, timeoutMs: options.timeoutMs})))
  const before = await all()
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, options.windowSeconds * 1000)
    options.signal?.addEventListener('abort', () => {
      clearTimeout(timer)
      resolve()
    }, {once: true})
  })
  const after = await all()
  return evaluateSlo(options.settings, before, after, options.priors)
}
