// Histogram arithmetic on scraped buckets: PromQL's histogram_quantile (same interpolation and edge
// cases), and the increase between two scrapes so that quantiles cover a window, not the uptime.
import {groupKey, labelsMatch, type Exposition, type Labels} from './prom-text.js'

export interface Bucket {
  /** Upper bound (`le`), +Inf for the last bucket. */
  le: number
  /** Cumulative count of observations <= le. */
  count: number
}

export interface HistogramData {
  buckets: Bucket[]
  sum: number
  count: number
}

export const EMPTY_HISTOGRAM: HistogramData = {buckets: [], sum: 0, count: 0}

/**
 * PromQL's histogram_quantile over cumulative buckets: linear interpolation inside the bucket that
 * holds the rank, the lowest bucket starting at 0, and the upper bound of the second-highest bucket
 * when the rank falls into +Inf. NaN without a +Inf bucket, with under two buckets or no observations.
 */
export function histogramQuantile(q: number, input: readonly Bucket[]): number {
  if (Number.isNaN(q)) return Number.NaN
  if (q < 0) return Number.NEGATIVE_INFINITY
  if (q > 1) return Number.POSITIVE_INFINITY
  const sorted = [...input].sort((a, b) => a.le - b.le)
  if (sorted.length === 0 || sorted.at(-1)!.le !== Number.POSITIVE_INFINITY) return Number.NaN
  // Equal bounds (from series that differed only in other labels) are added together, as PromQL does.
  const buckets: Bucket[] = []
  for (const b of sorted) {
    const last = buckets.at(-1)
    if (last && last.le === b.le) last.count += b.count
    else buckets.push({le: b.le, count: b.count})
  }
  // Scrapes racing observations can make counts dip; PromQL takes the running maximum.
  for (let i = 1; i < buckets.length; i++) if (buckets[i]!.count < buckets[i - 1]!.count) buckets[i]!.count = buckets[i - 1]!.count
  if (buckets.length < 2) return Number.NaN
  const observations = buckets.at(-1)!.count
  if (observations === 0) return Number.NaN
  let rank = q * observations
  let b = 0
  while (b < buckets.length - 1 && buckets[b]!.count < rank) b++
  if (b === buckets.length - 1) return buckets[buckets.length - 2]!.le
  if (b === 0 && buckets[0]!.le <= 0) return buckets[0]!.le
  let start = 0
  const end = buckets[b]!.le
  let count = buckets[b]!.count
  if (b > 0) {
    start = buckets[b - 1]!.le
    count -= buckets[b - 1]!.count
    rank -= buckets[b - 1]!.count
  }
  return start + (end - start) * (rank / count)
}

/**
 * The histogram `name` summed over every series whose labels match (PromQL `sum by (le)`), from the
 * `_bucket`, `_sum` and `_count` samples of one scrape.
 */
export function histogramOf(expo: Exposition, name: string, match?: Record<string, string | RegExp>): HistogramData {
  const byLe = new Map<number, number>()
  let sum = 0
  let count = 0
  for (const s of expo.samples) {
    if (!labelsMatch(s.labels, match)) continue
    if (s.name === `${name}_bucket`) {
      const le = s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le)
      if (Number.isNaN(le)) continue
      byLe.set(le, (byLe.get(le) ?? 0) + s.value)
    } else if (s.name === `${name}_sum`) sum += s.value
    else if (s.name === `${name}_count`) count += s.value
  }
  const buckets = [...byLe].map(([le, c]) => ({le, count: c})).sort((a, b) => a.le - b.le)
  return {buckets, sum, count}
}

/** Histograms of `name` grouped by the given labels (PromQL `sum by (keys..., le)`). */
export function histogramsBy(expo: Exposition, name: string, keys: readonly string[], match?: Record<string, string | RegExp>): Map<string, {labels: Labels; data: HistogramData}> {
  const groups = new Map<string, {labels: Labels; data: HistogramData}>()
  for (const s of expo.samples) {
    if (!s.name.startsWith(name) || !labelsMatch(s.labels, match)) continue
    const suffix = s.name.slice(name.length)
    if (suffix !== '_bucket' && suffix !== '_sum' && suffix !== '_count') continue
    const key = groupKey(s.labels, keys)
    let group = groups.get(key)
    if (group === undefined) {
      const labels = Object.fromEntries(keys.map((k) => [k, s.labels[k] ?? '']))
      groups.set(key, (group = {labels, data: {buckets: [], sum: 0, count: 0}}))
    }
    const data = group.data
    if (suffix === '_sum') data.sum += s.value
    else if (suffix === '_count') data.count += s.value
    else {
      const le = s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le)
      if (Number.isNaN(le)) continue
      const bucket = data.buckets.find((b) => b.le === le)
      if (bucket) bucket.count += s.value
      else data.buckets.push({le, count: s.value})
    }
  }
  for (const g of groups.values()) g.data.buckets.sort((a, b) => a.le - b.le)
  return groups
}

/**
 * What was observed between two scrapes of the same histogram. A count that went down means the
 * process restarted (a counter reset): then everything since the restart is the current value.
 */
export function histogramIncrease(before: HistogramData | undefined, after: HistogramData): HistogramData {
  if (before === undefined || after.count < before.count) return after
  const buckets = after.buckets.map((b) => {
    const old = before.buckets.find((o) => o.le === b.le)?.count ?? 0
    return {le: b.le, count: Math.max(0, b.count - old)}
  })
  return {buckets, sum: after.sum - before.sum, count: after.count - before.count}
}

/** A counter's increase between two values, treating a decrease as a reset (like PromQL increase()). */
export function counterIncrease(before: number | undefined, after: number): number {
  if (before === undefined || after < before) return after
  return after - before
}

/** The mean observation (sum / count), NaN with no observations. */
export function histogramMean(h: HistogramData): number {
  return h.count > 0 ? h.sum / h.count : Number.NaN
}

/** Adds histograms with the same bucket layout (e.g. one per target) into one. */
export function mergeHistograms(list: readonly HistogramData[]): HistogramData {
  const byLe = new Map<number, number>()
  let sum = 0
  let count = 0
  for (const h of list) {
    for (const b of h.buckets) byLe.set(b.le, (byLe.get(b.le) ?? 0) + b.count)
    sum += h.sum
    count += h.count
  }
  return {buckets: [...byLe].map(([le, c]) => ({le, count: c})).sort((a, b) => a.le - b.le), sum, count}
}
