// The scriptable modes: one snapshot (two scrapes an interval apart, for rates) as JSON, and the SLO
// check (two scrapes a window apart) whose report decides the exit code.
import {Collector, type CollectorOptions} from './collector.js'
import type {DriftResult} from './drift.js'
import type {IngestStats} from './ingest-stats.js'
import type {RunSnapshot} from './run-follow.js'
import {scrape} from './scrape.js'
import type {TargetStats} from './serve-stats.js'
import type {SloSettings} from './slo.js'
import {CANARY_DEFAULTS, evaluateCheck, splitsIn, type CanarySettings, type CheckReport} from './canary.js'
import {UserError} from '../errors.js'

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
  /** Thresholds of the canary decision (default CANARY_DEFAULTS). */
  canary?: CanarySettings
  priors?: Record<string, number>
  token?: string
  timeoutMs?: number
  signal?: AbortSignal
}

/**
 * Scrapes every target, waits the window, scrapes again and judges the objectives and the canary
 * splits. With no objectives, a first scrape that shows no split is a usage error, said at once.
 */
export async function runCheck(options: CheckOptions): Promise<CheckReport> {
  const all = () => Promise.all(options.targets.map((t) => scrape(t, {token: options.token, timeoutMs: options.timeoutMs})))
  const before = await all()
  const {p99Ms, errorRate, drift} = options.settings
  if (p99Ms === undefined && errorRate === undefined && drift === undefined && !before.some((b) => b.expo && splitsIn(b.expo).size > 0)) {
    const down = before.filter((b) => b.error !== undefined).map((b) => `${b.target} (${b.error})`)
    throw new UserError(`nothing to check: no objectives, and no canary split on ${down.length === before.length ? 'the targets, which cannot be scraped: ' + down.join(', ') : 'the targets'}`, {
      code: 'MONITOR_USAGE',
      exit: 'usage',
      suggestions: ['Set monitor.slo.p99Ms, monitor.slo.errorRate or monitor.slo.drift in ml.yaml, or pass --p99-ms, --error-rate or --drift; or split traffic with serve.models[].split.'],
    })
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, options.windowSeconds * 1000)
    options.signal?.addEventListener('abort', () => {
      clearTimeout(timer)
      resolve()
    }, {once: true})
  })
  const after = await all()
  return evaluateCheck(options.settings, options.canary ?? CANARY_DEFAULTS, before, after, options.priors)
}
