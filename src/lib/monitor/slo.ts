// Service level objectives judged from two scrapes of every target a window apart: p99 latency and
// error ratio per model (summed over versions and targets, as the alert rules do), targets up, drift.
import {predictionDrift, type DriftResult} from './drift.js'
import {counterIncrease, histogramIncrease, histogramOf, histogramQuantile, mergeHistograms} from './histogram.js'
import {MODEL_PROTOCOLS, SERVE, SERVER_ERROR} from '../metric-names.js'
import {sumOf, type Exposition} from './prom-text.js'
import type {ScrapeResult} from './scrape.js'

export interface SloSettings {
  /** p99 request latency objective, ms. */
  p99Ms?: number
  /** Highest acceptable share of 5xx answers. */
  errorRate?: number
  /** Highest acceptable PSI of predicted classes against the training priors. */
  drift?: number
  /** Fewer predictions than this in the window: drift is not judged (too noisy). */
  driftMinSamples: number
}

export type CheckStatus = 'ok' | 'violated' | 'no-data'

export interface SloCheck {
  objective: 'up' | 'p99Ms' | 'errorRate' | 'drift'
  /** The model (or target, for `up`) the check is about. */
  scope: string
  threshold: number | null
  value: number | null
  status: CheckStatus
  detail: string
}

export interface ModelWindow {
  model: string
  requests: number
  errors: number
  errorRate: number | null
  p99Ms: number | null
  predictions: Record<string, number>
  drift?: DriftResult
}

export interface SloReport {
  ok: boolean
  /** Seconds between the two scrapes (the shortest over targets). */
  windowSeconds: number
  targets: Array<{target: string; up: boolean; error?: string}>
  models: ModelWindow[]
  checks: SloCheck[]
}

function modelsIn(expo: Exposition): Set<string> {
  const names = new Set<string>()
  for (const s of expo.samples) {
    if (!s.labels.model) continue
    if ((s.name === SERVE.requests && MODEL_PROTOCOLS.test(s.labels.protocol ?? '')) || s.name === SERVE.modelReady || s.name === SERVE.predictions) names.add(s.labels.model)
  }
  return names
}

function predictionCounts(expo: Exposition, model: string, version?: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const s of expo.samples) if (s.name === SERVE.predictions && s.labels.model === model && (version === undefined || s.labels.version === version)) out.set(s.labels.class ?? '', (out.get(s.labels.class ?? '') ?? 0) + s.value)
  return out
}

/** One model's traffic in the window, summed over its versions (or of one `version`) and every target scraped twice. */
export function modelWindow(pairs: ReadonlyArray<[Exposition, Exposition]>, model: string, version?: string): ModelWindow {
  let requests = 0
  let errors = 0
  const latencies = []
  const predictions: Record<string, number> = {}
  const match = {model, protocol: MODEL_PROTOCOLS, ...(version === undefined ? {} : {version})}
  for (const [before, after] of pairs) {
    requests += counterIncrease(sumOf(before, SERVE.requests, match), sumOf(after, SERVE.requests, match))
    errors += counterIncrease(sumOf(before, SERVE.requests, {...match, status: SERVER_ERROR}), sumOf(after, SERVE.requests, {...match, status: SERVER_ERROR}))
    latencies.push(histogramIncrease(histogramOf(before, SERVE.requestDuration, match), histogramOf(after, SERVE.requestDuration, match)))
    const old = predictionCounts(before, model, version)
    for (const [c, v] of predictionCounts(after, model, version)) predictions[c] = (predictions[c] ?? 0) + counterIncrease(old.get(c), v)
  }
  const p99 = histogramQuantile(0.99, mergeHistograms(latencies).buckets)
  return {model, requests, errors, errorRate: requests > 0 ? errors / requests : null, p99Ms: Number.isFinite(p99) ? p99 * 1000 : null, predictions}
}

const fmtMs = (v: number) => `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`
const fmtPct = (v: number) => `${(v * 100).toFixed(v < 0.001 && v > 0 ? 3 : 2)}%`

/**
 * Judges the objectives. `before` and `after` hold one scrape per target, in the same order;
 * `priors` (class shares of the training data) enable the drift check.
 */
export function evaluateSlo(settings: SloSettings, before: ScrapeResult[], after: ScrapeResult[], priors?: Record<string, number>): SloReport {
  const checks: SloCheck[] = []
  const targets = after.map((a, i) => {
    const b = before[i]!
    const error = a.error ?? b.error
    return {target: a.target, up: error === undefined, ...(error === undefined ? {} : {error})}
  })
  for (const t of targets) {
    checks.push({objective: 'up', scope: t.target, threshold: null, value: t.up ? 1 : 0, status: t.up ? 'ok' : 'violated', detail: t.up ? 'scraped' : `cannot scrape: ${t.error}`})
  }
  const pairs: Array<[Exposition, Exposition]> = []
  let windowSeconds = Number.POSITIVE_INFINITY
  after.forEach((a, i) => {
    const b = before[i]!
    if (a.expo && b.expo) {
      pairs.push([b.expo, a.expo])
      windowSeconds = Math.min(windowSeconds, (a.at - b.at) / 1000)
    }
  })
  const names = new Set<string>()
  for (const [, a] of pairs) for (const m of modelsIn(a)) names.add(m)
  const models = [...names].sort().map((m) => modelWindow(pairs, m))
  for (const m of models) {
    const idle = `no requests for ${m.model} in the window`
    if (settings.p99Ms !== undefined) {
      const value = m.p99Ms
      checks.push({
        objective: 'p99Ms',
        scope: m.model,
        threshold: settings.p99Ms,
        value,
        status: value === null ? 'no-data' : value > settings.p99Ms ? 'violated' : 'ok',
        detail: value === null ? idle : `p99 ${fmtMs(value)} ${value > settings.p99Ms ? '>' : '<='} ${fmtMs(settings.p99Ms)} over ${m.requests} requests`,
      })
    }
    if (settings.errorRate !== undefined) {
      const value = m.errorRate
      checks.push({
        objective: 'errorRate',
        scope: m.model,
        threshold: settings.errorRate,
        value,
        status: value === null ? 'no-data' : value > settings.errorRate ? 'violated' : 'ok',
        detail: value === null ? idle : `${m.errors} of ${m.requests} requests failed (5xx): ${fmtPct(value)} ${value > settings.errorRate ? '>' : '<='} ${fmtPct(settings.errorRate)}`,
      })
    }
    if (settings.drift !== undefined && priors) {
      const drift = predictionDrift(priors, m.predictions)
      m.drift = drift
      const enough = drift.samples >= settings.driftMinSamples && drift.psi !== null
      const worst = [...drift.classes].sort((x, y) => Math.abs(y.observed - y.expected) - Math.abs(x.observed - x.expected))[0]
      const shift = worst ? `; largest shift: class ${worst.class} ${fmtPct(worst.expected)} in training, ${fmtPct(worst.observed)} predicted` : ''
      const unknown = drift.unknownClasses.length ? `; classes unknown to the training data: ${drift.unknownClasses.join(', ')}` : ''
      checks.push({
        objective: 'drift',
        scope: m.model,
        threshold: settings.drift,
        value: drift.psi,
        status: !enough ? 'no-data' : drift.psi! > settings.drift ? 'violated' : 'ok',
        detail: !enough
          ? `${drift.samples} predictions in the window; drift is judged from ${settings.driftMinSamples}`
          : `PSI ${drift.psi!.toFixed(3)} ${drift.psi! > settings.drift ? '>' : '<='} ${settings.drift} over ${drift.samples} predictions (chi-square p = ${drift.chiSquare!.pValue.toPrecision(2)})${shift}${unknown}`,
      })
    }
  }
  return {ok: checks.every((c) => c.status !== 'violated'), windowSeconds: Number.isFinite(windowSeconds) ? windowSeconds : 0, targets, models, checks}
}

/** The report as text lines: a verdict, then one line per check. */
export function formatSloReport(report: SloReport): string[] {
  const violated = report.checks.filter((c) => c.status === 'violated')
  const lines = [
    report.ok
      ? `SLO check passed over a ${report.windowSeconds.toFixed(1)} s window (${report.checks.length} checks)`
      : `SLO check FAILED over a ${report.windowSeconds.toFixed(1)} s window: ${violated.length} of ${report.checks.length} checks violated`,
  ]
  const mark: Record<CheckStatus, string> = {ok: 'ok  ', violated: 'FAIL', 'no-data': 'n/a '}
  for (const c of report.checks) lines.push(`  ${mark[c.status]} ${c.objective.padEnd(9)} ${c.scope}: ${c.detail}`)
  if (report.models.length === 0 && report.targets.some((t) => t.up)) lines.push('  (no model traffic or loaded models seen on the targets)')
  return lines
}
