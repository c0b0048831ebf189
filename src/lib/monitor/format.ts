// Number formatting for the dashboard and reports: short, fixed-width-friendly, and "-" for no data
// (null), so that a missing figure never reads as zero.

export const NONE = '-'

export function fmtNumber(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return NONE
  const a = Math.abs(v)
  if (a >= 1e9) return `${(v / 1e9).toFixed(digits)}G`
  if (a >= 1e6) return `${(v / 1e6).toFixed(digits)}M`
  if (a >= 1e4) return `${(v / 1e3).toFixed(digits)}k`
  if (a >= 100 || Number.isInteger(v)) return v.toFixed(0)
  return v.toFixed(digits)
}

export function fmtRate(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return NONE
  return Math.abs(v) < 10 && v !== 0 ? v.toFixed(2) : fmtNumber(v)
}

/** Milliseconds with two significant-ish digits: 0.42ms, 8.9ms, 120ms, 2.1s. */
export function fmtMs(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return NONE
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)}s`
  if (v >= 100) return `${v.toFixed(0)}ms`
  if (v >= 10) return `${v.toFixed(1)}ms`
  return `${v.toFixed(2)}ms`
}

export function fmtPct(v: number | null | undefined, digits = 2): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return NONE
  return `${(v * 100).toFixed(digits)}%`
}

export function fmtBytes(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return NONE
  if (v >= 1024 ** 3) return `${(v / 1024 ** 3).toFixed(2)} GiB`
  if (v >= 1024 ** 2) return `${(v / 1024 ** 2).toFixed(0)} MiB`
  if (v >= 1024) return `${(v / 1024).toFixed(0)} KiB`
  return `${v} B`
}

export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return NONE
  const s = Math.round(seconds)
  if (s >= 86_400) return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600)}h`
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${s}s`
}

/** Parses a duration: a number of seconds, or "500ms", "60s", "5m", "1h". */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') {
    if (!(value > 0) || !Number.isFinite(value)) throw new Error(`expected a positive duration, got ${value}`)
    return value
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value)
  if (!m) throw new Error(`expected a duration like 500ms, 60s, 5m or 1h, got "${value}"`)
  const n = Number(m[1])
  const seconds = n * ({ms: 0.001, s: 1, m: 60, h: 3600}[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'])
  if (!(seconds > 0)) throw new Error(`expected a positive duration, got "${value}"`)
  return seconds
}
