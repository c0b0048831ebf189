// The canary decision of `ml monitor --check`: for every model whose server splits traffic
// (ml_serve_traffic_split_percent names the stable and canary versions), the canary's 5xx rate and
// p99 latency over the window against the stable version's: promote, rollback, or wait while either
// version has too few requests to tell.
import {SERVE} from '../metric-names.js'
import {select, type Exposition} from './prom-text.js'
import type {ScrapeResult} from './scrape.js'
import {evaluateSlo, formatSloReport, modelWindow, type SloReport, type SloSettings} from './slo.js'

export interface CanarySettings {
  /** Requests each version needs in the window before a verdict. */
  minRequests: number
  /** Rollback when the canary's error rate exceeds the stable one's by more than this (0.01: one point). */
  errorRateMargin: number
  /** Rollback when the canary's p99 exceeds the stable p99 times this... */
  p99Ratio: number
  /** ...and by more than this many milliseconds (histogram buckets are coarse at low latencies). */
  p99MarginMs: number
}

export const CANARY_DEFAULTS: CanarySettings = {minRequests: 100, errorRateMargin: 0.01, p99Ratio: 1.2, p99MarginMs: 5}

export type CanaryVerdict = 'promote' | 'rollback' | 'wait'

export interface VersionStats {
  version: string
  /** Share of the model's unversioned requests the split sends to it. */
  percent: number
  requests: number
  errors: number
  errorRate: number | null
  p99Ms: number | null
}

export interface CanaryResult {
  model: string
  stable: VersionStats
  canary: VersionStats
  verdict: CanaryVerdict
  /** Why: what decided the verdict, one line each. */
  reasons: string[]
}

export interface SplitSeen {
  stable: {version: string; percent: number}
  canary: {version: string; percent: number}
}

/** The models a scrape shows splitting traffic between two versions (a split down to one version is none). */
export function splitsIn(expo: Exposition): Map<string, SplitSeen> {
  const roles = new Map<string, Partial<SplitSeen>>()
  for (const s of select(expo, SERVE.trafficSplit)) {
    const {model, version, role} = s.labels
    if (!model || !version || (role !== 'stable' && role !== 'canary')) continue
    const entry = roles.get(model) ?? {}
    entry[role] ??= {version, percent: s.value}
    roles.set(model, entry)
  }
  const out = new Map<string, SplitSeen>()
  for (const [model, seen] of roles) if (seen.stable && seen.canary) out.set(model, {stable: seen.stable, canary: seen.canary})
  return out
}

const pct = (v: number) => `${(v * 100).toFixed(2)}%`
const ms = (v: number) => `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`

function stats(pairs: ReadonlyArray<[Exposition, Exposition]>, model: string, side: {version: string; percent: number}): VersionStats {
  const w = modelWindow(pairs, model, side.version)
  return {version: side.version, percent: side.percent, requests: w.requests, errors: w.errors, errorRate: w.errorRate, p99Ms: w.p99Ms}
}

/** The verdict for one split model from the window's scrape pairs. */
export function judgeCanary(settings: CanarySettings, pairs: ReadonlyArray<[Exposition, Exposition]>, model: string, split: SplitSeen): CanaryResult {
  const stable = stats(pairs, model, split.stable)
  const canary = stats(pairs, model, split.canary)
  const few = [canary, stable].filter((v) => v.requests < settings.minRequests)
  if (few.length > 0) {
    const reasons = few.map((v) => `not enough requests: version ${v.version} (${v === canary ? 'canary' : 'stable'}) had ${v.requests} in the window, ${settings.minRequests} are needed`)
    return {model, stable, canary, verdict: 'wait', reasons}
  }
  const reasons: string[] = []
  const errorLimit = stable.errorRate! + settings.errorRateMargin
  const errorsWorse = canary.errorRate! > errorLimit
  reasons.push(`error rate ${pct(canary.errorRate!)} (${canary.errors} of ${canary.requests}) vs stable ${pct(stable.errorRate!)} (${stable.errors} of ${stable.requests}): ${errorsWorse ? '>' : '<='} ${pct(errorLimit)} allowed`)
  let slower = false
  if (canary.p99Ms !== null && stable.p99Ms !== null) {
    const limit = Math.max(stable.p99Ms * settings.p99Ratio, stable.p99Ms + settings.p99MarginMs)
    slower = canary.p99Ms > limit
    reasons.push(`p99 ${ms(canary.p99Ms)} vs stable ${ms(stable.p99Ms)}: ${slower ? '>' : '<='} ${ms(limit)} allowed (x${settings.p99Ratio}, at least +${settings.p99MarginMs} ms)`)
  }
  return {model, stable, canary, verdict: errorsWorse || slower ? 'rollback' : 'promote', reasons}
}

/** Every split model seen after the window (the first target that shows one decides its versions). */
export function judgeCanaries(settings: CanarySettings, pairs: ReadonlyArray<[Exposition, Exposition]>): CanaryResult[] {
  const splits = new Map<string, SplitSeen>()
  for (const [, after] of pairs) for (const [model, split] of splitsIn(after)) if (!splits.has(model)) splits.set(model, split)
  return [...splits.keys()].sort().map((model) => judgeCanary(settings, pairs, model, splits.get(model)!))
}

/** One line per model: the verdict first, as a rollout script reads it. */
export function formatCanary(result: CanaryResult): string[] {
  const head = `canary ${result.model}: version ${result.canary.version} (${result.canary.percent}%) vs stable ${result.stable.version} (${result.stable.percent}%): `
  if (result.verdict === 'wait') return [`${head}wait: not enough requests`, ...result.reasons.map((r) => `    ${r}`)]
  return [`${head}${result.verdict}`, ...result.reasons.map((r) => `    ${r}`)]
}

/** The SLO report plus the canary verdicts; `ok` only when every objective holds and every canary may be promoted. */
export interface CheckReport extends SloReport {
  canary: CanaryResult[]
  /** Over every split model: rollback if one must roll back, else wait if one lacks requests, else promote; absent without splits. */
  verdict?: CanaryVerdict
}

/** Judges the objectives (evaluateSlo) and every canary split seen on the targets. */
export function evaluateCheck(settings: SloSettings, canarySettings: CanarySettings, before: ScrapeResult[], after: ScrapeResult[], priors?: Record<string, number>): CheckReport {
  const slo = evaluateSlo(settings, before, after, priors)
  const pairs: Array<[Exposition, Exposition]> = []
  after.forEach((a, i) => {
    const b = before[i]!
    if (a.expo && b.expo) pairs.push([b.expo, a.expo])
  })
  const canary = judgeCanaries(canarySettings, pairs)
  const verdicts = new Set(canary.map((c) => c.verdict))
  const verdict: CanaryVerdict | undefined = canary.length === 0 ? undefined : verdicts.has('rollback') ? 'rollback' : verdicts.has('wait') ? 'wait' : 'promote'
  return {...slo, ok: slo.ok && (verdict === undefined || verdict === 'promote'), canary, ...(verdict ? {verdict} : {})}
}

/** The report as text: the SLO lines, then each canary's verdict and reasons. */
export function formatCheckReport(report: CheckReport): string[] {
  return [...formatSloReport(report), ...report.canary.flatMap(formatCanary)]
}
