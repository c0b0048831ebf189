// Fetching a target's /metrics: one HTTP GET with a timeout and an optional bearer token, parsed,
// and every failure turned into a result (a dashboard shows a down target instead of stopping).
import {parseExposition, type Exposition} from './prom-text.js'

export interface ScrapeResult {
  /** The target as configured. */
  target: string
  /** The URL that was fetched. */
  url: string
  /** Date.now() when the response was complete (or the failure happened). */
  at: number
  durationMs: number
  expo?: Exposition
  error?: string
}

export interface ScrapeOptions {
  timeoutMs?: number
  token?: string
}

/**
 * The metrics URL of a target: a server's base URL (`http://host:8080`) gets `/metrics`; a URL
 * with a path is used as it is (e.g. an ingest's `http://host:9464/metrics`).
 */
export function metricsUrl(target: string): string {
  let url: URL
  try {
    url = new URL(target.includes('://') ? target : `http://${target}`)
  } catch {
    throw new Error(`"${target}" is not a URL`)
  }
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/metrics'
  return url.toString()
}

export async function scrape(target: string, options: ScrapeOptions = {}): Promise<ScrapeResult> {
  const started = Date.now()
  let url = target
  try {
    url = metricsUrl(target)
    const response = await fetch(url, {
      headers: {accept: 'text/plain;version=0.0.4', ...(options.token ? {authorization: `Bearer ${options.token}`} : {})},
      signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
    })
    const text = await response.text()
    if (!response.ok) throw new Error(`HTTP ${response.status}${text ? `: ${text.slice(0, 200).trim()}` : ''}`)
    const expo = parseExposition(text)
    const at = Date.now()
    return {target, url, at, durationMs: at - started, expo}
  } catch (error) {
    const at = Date.now()
    return {target, url, at, durationMs: at - started, error: describeFetchError(error)}
  }
}

/** fetch() says only "fetch failed"; the reason (ECONNREFUSED, a timeout) is in the cause. */
function describeFetchError(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  if (error.name === 'TimeoutError') return 'timed out'
  const cause = (error as Error & {cause?: {code?: string; message?: string}}).cause
  if (cause?.code) return `${cause.code}${cause.message && !cause.message.includes(cause.code) ? ` (${cause.message})` : ''}`
  if (cause?.message) return cause.message
  return error.message
}
