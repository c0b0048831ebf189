// What `ml monitor` needs before it runs: config (optional when URLs are given) and flags merged into
// one settings object, user mistakes as UserErrors, and the small outputs (PNG curves, text snapshot).
import {resolvePath, type LoadedConfig} from '../config/load.js'
import {MonitorSchema, type MlConfig, type MonitorConfig} from '../config/schema.js'
import {readManifest} from '../data/store.js'
import {isUserError, UserError} from '../errors.js'
import {trainingCurvesSvg, writeSvgPng} from './charts.js'
import type {CollectorOptions, Frame} from './collector.js'
import {classPriors} from './drift.js'
import {parseDuration} from './format.js'
import type {Snapshot} from './once.js'
import {renderDashboard} from './render.js'
import {readRun, resolveRun} from './run-follow.js'
import {metricsUrl} from './scrape.js'
import {formatSloReport, type SloReport, type SloSettings} from './slo.js'
import {formatCanary, type CanarySettings, type CheckReport} from './canary.js'

export interface MonitorFlags {
  config: string
  url?: string[]
  run?: string
  ingest?: string
  once?: boolean
  check?: boolean
  window?: string
  interval?: string
  'interval-ms'?: number
  'p99-ms'?: string
  'error-rate'?: string
  drift?: string
  'min-requests'?: number
  dataset?: string
  png?: string
}

export interface MonitorSettings {
  targets: string[]
  ingest?: string
  run?: string
  intervalMs: number
  historySeconds: number
  windowSeconds: number
  slo: SloSettings
  /** The canary decision's thresholds (monitor.canary). */
  canary: CanarySettings
  priors?: Record<string, number>
  token?: string
  collector: CollectorOptions
}

type ConfigLoader = (file: string, overrides?: Record<string, unknown>) => Promise<LoadedConfig>

function usage(message: string, suggestions: string[] = []): UserError {
  return new UserError(message, {code: 'MONITOR_USAGE', exit: 'usage', suggestions})
}

function durationFlag(name: string, value: string, allowZero = false): number {
  if (allowZero && /^\s*0+(\.0+)?\s*(ms|s|m|h)?\s*$/.test(value)) return 0
  try {
    return parseDuration(/^\s*\d+(\.\d+)?\s*$/.test(value) ? Number(value) : value)
  } catch (error) {
    throw usage(`--${name}: ${(error as Error).message}`)
  }
}

function numberFlag(name: string, value: string | undefined, max?: number): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0 || (max !== undefined && n > max)) throw usage(`--${name}: expected a positive number${max === undefined ? '' : ` up to ${max}`}, got "${value}"`)
  return n
}

async function loadOptional(flags: MonitorFlags, load: ConfigLoader): Promise<LoadedConfig | undefined> {
  try {
    return await load(flags.config)
  } catch (error) {
    // Watching a URL or a run directory needs no ml.yaml.
    if (isUserError(error) && error.code === 'CONFIG_NOT_FOUND' && (flags.url?.length || flags.run || flags.ingest)) return undefined
    throw error
  }
}

async function loadPriors(config: MlConfig | undefined, loaded: LoadedConfig | undefined, dataset: string | undefined, required: boolean): Promise<Record<string, number> | undefined> {
  const store = dataset ?? (loaded && config ? resolvePath(loaded, config.data.store) : undefined)
  if (store === undefined) {
    if (required) throw usage('the drift objective needs the training class priors: pass --dataset <store> or --config <ml.yaml> (its data.store)')
    return undefined
  }
  try {
    return classPriors(await readManifest(store))
  } catch (error) {
    if (required) throw error
    return undefined
  }
}

/**
 * The refresh interval in milliseconds, the unit of monitor.refreshMs: --interval-ms, or the older
 * --interval, whose bare numbers are milliseconds too (it also takes 500ms, 2s, 1m).
 */
function intervalFlag(flags: MonitorFlags): number | undefined {
  if (flags['interval-ms'] !== undefined) return flags['interval-ms']
  if (flags.interval === undefined) return undefined
  const value = flags.interval.trim()
  if (/^\d+$/.test(value)) return Number(value)
  return durationFlag('interval', value, flags.once === true) * 1000
}

/**
 * With no targets anywhere but a config: the local `ml serve` of that config (serve.host, serve.port),
 * unless the command is about a run or an ingest only.
 */
function localServer(config: MlConfig | undefined, flags: MonitorFlags): string[] {
  if (!config || flags.run !== undefined || flags.ingest !== undefined || flags.png !== undefined || config.monitor.ingest !== undefined) return []
  const host = config.serve.host === '0.0.0.0' || config.serve.host === '::' ? '127.0.0.1' : config.serve.host
  if (config.serve.port === 0) return []
  const scheme = config.serve.tls ? 'https' : 'http'
  return [`${scheme}://${host.includes(':') ? `[${host}]` : host}:${config.serve.port}`]
}

export async function resolveMonitor(flags: MonitorFlags, load: ConfigLoader): Promise<MonitorSettings> {
  const loaded = await loadOptional(flags, load)
  const config = loaded?.config
  const monitor: MonitorConfig = config?.monitor ?? MonitorSchema.parse({})
  const targets = flags.url?.length ? flags.url : monitor.targets.length ? monitor.targets : localServer(config, flags)
  for (const t of targets) {
    try {
      metricsUrl(t)
    } catch (error) {
      throw usage(`${(error as Error).message} (a target is an ml serve URL such as http://127.0.0.1:8080)`)
    }
  }
  const ingest = flags.ingest ?? monitor.ingest
  const intervalMs = intervalFlag(flags) ?? monitor.refreshMs
  if (!flags.once && intervalMs < 100) throw usage('--interval: the dashboard refreshes at most every 100ms')
  const windowSeconds = flags.window === undefined ? monitor.slo.window : durationFlag('window', flags.window)
  const slo: SloSettings = {
    p99Ms: numberFlag('p99-ms', flags['p99-ms']) ?? monitor.slo.p99Ms,
    errorRate: numberFlag('error-rate', flags['error-rate'], 1) ?? monitor.slo.errorRate,
    drift: numberFlag('drift', flags.drift) ?? monitor.slo.drift,
    driftMinSamples: monitor.slo.driftMinSamples,
  }
  const runsDir = loaded && config ? resolvePath(loaded, config.train.runs) : '.ml/runs'
  const run = flags.run === undefined ? undefined : await resolveRun(flags.run, runsDir)
  if (flags.png) {
    if (!run) throw usage('--png needs --run <run>')
  } else if (flags.check) {
    // With no objectives, the check is about the canary splits the targets show (once.ts runCheck).
    if (targets.length === 0) throw usage('nothing to check: no targets', ['Pass --url http://host:port, or set monitor.targets in ml.yaml.'])
  } else if (targets.length === 0 && !run && !ingest) {
    throw usage('nothing to watch', ['Pass --url http://host:port (repeatable), --run <run> or --ingest <metrics URL>, or set monitor.targets in ml.yaml.'])
  }
  const needPriors = flags.check === true && slo.drift !== undefined
  const priors = flags.png ? undefined : await loadPriors(config, loaded, flags.dataset, needPriors)
  const tokenEnv = monitor.tokenEnv ?? config?.serve.auth?.tokenEnv
  const token = tokenEnv ? process.env[tokenEnv] : undefined
  if (tokenEnv && monitor.tokenEnv && !token) throw usage(`monitor.tokenEnv names ${tokenEnv}, which is not set`)
  const historySeconds = monitor.history
  return {
    targets,
    ingest,
    run,
    intervalMs,
    historySeconds,
    windowSeconds,
    slo,
    canary: {...monitor.canary, ...(flags['min-requests'] === undefined ? {} : {minRequests: flags['min-requests']})},
    priors,
    token,
    collector: {targets, ingest, run, historySeconds, windowSeconds, priors, token, timeoutMs: Math.max(1000, Math.min(10_000, intervalMs || 5000))},
  }
}

/**
 * The UserError of a check that did not pass, the whole report for --json: a canary to roll back or a
 * violated objective exit 6, a canary without enough requests yet exits 7 (check again later).
 */
export function checkFailure(report: CheckReport): UserError {
  const rollback = report.canary.filter((c) => c.verdict === 'rollback')
  const sloFailed = report.checks.some((c) => c.status === 'violated')
  if (rollback.length === 0 && !sloFailed && report.verdict === 'wait') {
    return new UserError(report.canary.filter((c) => c.verdict === 'wait').flatMap(formatCanary).join('\n'), {
      code: 'CANARY_WAIT',
      exit: 'pending',
      details: report,
      suggestions: ['Check again once more requests have come in, or over a longer --window.'],
    })
  }
  if (rollback.length > 0) {
    const lines = [...rollback.flatMap(formatCanary), ...(sloFailed ? sloFailure(report).message.split('\n') : [])]
    return new UserError(lines.join('\n'), {
      code: 'CANARY_ROLLBACK',
      exit: 'slo',
      details: report,
      suggestions: rollback.map((c) => `Stop the canary: \`ml models alias ${c.stable.version} canary\` (or set serve.models[].split.percent to 0).`),
    })
  }
  return sloFailure(report)
}

/** The UserError of a failed check: the violated objectives, exit 6, the whole report for --json. */
export function sloFailure(report: SloReport): UserError {
  const lines = formatSloReport(report)
  const failed = lines.filter((l, i) => i === 0 || l.trimStart().startsWith('FAIL'))
  return new UserError(failed.join('\n'), {
    code: 'SLO_VIOLATED',
    exit: 'slo',
    details: report,
    suggestions: ['`ml monitor` shows the live figures; configs/monitoring/ has the matching Prometheus alerts.'],
  })
}

export async function writeRunPng(settings: MonitorSettings, file: string): Promise<{file: string; width: number; height: number; runId: string; epochs: number}> {
  const run = await readRun(settings.run!)
  const written = await writeSvgPng(trainingCurvesSvg(run.metrics, `Training of ${run.runId} (${run.status}, ${run.epochsCompleted}/${run.epochs} epochs)`), file)
  return {file, width: written.width, height: written.height, runId: run.runId, epochs: run.metrics.length}
}

/** A snapshot as the dashboard would draw it (plain text, no colour), for --once without --json. */
export function renderSnapshot(snapshot: Snapshot, settings: MonitorSettings, columns = process.stdout.columns ?? 120): string[] {
  const frame: Frame = {
    at: Date.parse(snapshot.at),
    targets: snapshot.targets,
    ingest: snapshot.ingest,
    run: snapshot.run,
    runError: snapshot.runError,
    drift: new Map((snapshot.drift ?? []).map((d) => [`${d.target}\u0000${d.model}`, d])),
  }
  const lines = renderDashboard(frame, {columns, rows: 1000, colour: false, refreshMs: settings.intervalMs, historySeconds: settings.historySeconds, slo: settings.slo, history: () => [], sparklines: false})
  // The footer is about the live view (sparklines, keys): a snapshot ends without it.
  return lines.slice(0, -1)
}
