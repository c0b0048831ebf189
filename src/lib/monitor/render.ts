// The dashboard as text: one frame laid out for a given terminal size (columns are dropped and
// sparklines narrowed as the width shrinks; rows are cut with a "more" line), pure and testable.
import type {Frame, Point} from './collector.js'
import {seriesKey} from './collector.js'
import {fmtBytes, fmtDuration, fmtMs, fmtNumber, fmtPct, fmtRate, NONE} from './format.js'
import type {ModelStats, TargetStats} from './serve-stats.js'
import {bar, braillePlot, padEnd, padStart, painter, resample, sparkline, truncate, visibleWidth, type Paint} from './tui.js'

export interface RenderOptions {
  columns: number
  rows: number
  colour: boolean
  refreshMs: number
  historySeconds: number
  /** Thresholds that turn a figure red. */
  slo?: {p99Ms?: number; errorRate?: number; drift?: number}
  /** Points of one series (Collector.history). */
  history: (key: string) => Point[]
  /** false for a one-off snapshot, which has no history to draw. */
  sparklines?: boolean
}

interface Column {
  title: string
  width: number
  /** Lower is kept longer when the terminal is narrow. */
  priority: number
  align: 'left' | 'right'
  /** Sparklines take the width left over. */
  flex?: boolean
  cell: (m: ModelStats, width: number) => string
}

const clock = (t: number) => new Date(t).toISOString().slice(11, 19)

/** A span for titles: 5m rather than 5m00s. */
function spanText(seconds: number): string {
  const s = Math.round(seconds)
  return s >= 60 && s % 60 === 0 ? `${s / 60}m` : fmtDuration(s)
}

function spark(points: Point[], from: number, to: number, width: number, options?: {min?: number; max?: number}): string {
  return sparkline(resample(points, from, to, width), options)
}

function modelColumns(target: TargetStats, frame: Frame, options: RenderOptions, paint: Paint): Column[] {
  const {slo} = options
  const nameWidth = Math.min(28, Math.max(13, ...target.models.map((m) => m.model.length + m.version.length + 3)))
  const red = (bad: boolean, text: string) => (bad ? paint('red', text) : text)
  const to = frame.at
  const from = to - options.historySeconds * 1000
  const columns: Column[] = [
    {
      title: 'model:version',
      width: nameWidth,
      priority: 0,
      align: 'left',
      cell: (m) => {
        const mark = m.ready === false ? paint('yellow', '○') : m.ready ? paint('green', '●') : ' '
        return `${mark} ${m.model}:${m.version || NONE}`
      },
    },
    {title: 'req/s', width: 7, priority: 0, align: 'right', cell: (m) => fmtRate(m.window?.requestsPerSec)},
    {
      title: 'err',
      width: 7,
      priority: 1,
      align: 'right',
      cell: (m) => {
        const v = m.window?.errorRate ?? null
        return red(v !== null && slo?.errorRate !== undefined && v > slo.errorRate, fmtPct(v))
      },
    },
    {title: 'p50', width: 7, priority: 4, align: 'right', cell: (m) => fmtMs(m.window?.latencyMs.p50)},
    {title: 'p95', width: 7, priority: 5, align: 'right', cell: (m) => fmtMs(m.window?.latencyMs.p95)},
    {
      title: 'p99',
      width: 7,
      priority: 0,
      align: 'right',
      cell: (m) => {
        const v = m.window?.latencyMs.p99 ?? null
        return red(v !== null && slo?.p99Ms !== undefined && v > slo.p99Ms, fmtMs(v))
      },
    },
    {title: 'batch', width: 6, priority: 3, align: 'right', cell: (m) => fmtNumber(m.window?.avgBatchSize ?? null)},
    {title: 'queue', width: 6, priority: 2, align: 'right', cell: (m) => fmtNumber(m.queueDepth)},
    {title: 'img/s', width: 7, priority: 6, align: 'right', cell: (m) => fmtRate(m.window?.imagesPerSec)},
  ]
  if (frame.drift.size > 0) {
    columns.push({
      title: 'psi',
      width: 6,
      priority: 4,
      align: 'right',
      cell: (m) => {
        const d = frame.drift.get(seriesKey(target.target, m.model))
        const v = d?.psi ?? null
        return red(v !== null && slo?.drift !== undefined && v > slo.drift, v === null ? NONE : v.toFixed(3))
      },
    })
  }
  const span = spanText(options.historySeconds)
  if (options.sparklines === false) return columns
  columns.push(
    {
      title: `req/s ${span}`,
      width: 8,
      priority: 1,
      align: 'left',
      flex: true,
      cell: (m, w) => paint('cyan', spark(options.history(seriesKey(target.target, m.model, m.version, 'rps')), from, to, w)),
    },
    {
      title: `p99 ${span}`,
      width: 8,
      priority: 3,
      align: 'left',
      flex: true,
      cell: (m, w) => paint('magenta', spark(options.history(seriesKey(target.target, m.model, m.version, 'p99')), from, to, w)),
    },
  )
  return columns
}

/** Drops the least important columns until the row fits, then gives the spare width to sparklines. */
function fitColumns(columns: Column[], width: number): Column[] {
  let kept = [...columns]
  const total = (cs: Column[]) => cs.reduce((sum, c) => sum + c.width + 1, 0)
  while (total(kept) > width && kept.length > 1) {
    const worst = kept.reduce((a, b) => (b.priority >= a.priority ? b : a))
    kept = kept.filter((c) => c !== worst)
  }
  const flex = kept.filter((c) => c.flex)
  const spare = width - total(kept)
  if (flex.length > 0 && spare > 0) {
    const each = Math.floor(spare / flex.length)
    kept = kept.map((c) => (c.flex ? {...c, width: Math.min(90, c.width + each)} : c))
  }
  return kept
}

function tableLines(columns: Column[], models: ModelStats[], paint: Paint): string[] {
  const cell = (c: Column, text: string) => (c.align === 'right' ? padStart(text, c.width) : padEnd(text, c.width))
  const header = paint('dim', columns.map((c) => cell(c, c.title)).join(' '))
  return [header, ...models.map((m) => columns.map((c) => cell(c, c.cell(m, c.width))).join(' '))]
}

function targetLines(target: TargetStats, frame: Frame, options: RenderOptions, paint: Paint, maxRows: number): string[] {
  const to = frame.at
  const from = to - options.historySeconds * 1000
  if (!target.up) {
    return [`${paint('bold', '▌' + target.target)}  ${paint('red', 'DOWN')}  ${target.error ?? ''}`]
  }
  const p = target.process
  const cpuSpark = options.sparklines === false ? '' : ' ' + paint('cyan', spark(options.history(seriesKey(target.target, 'cpu')), from, to, 8, {min: 0}))
  const head = [
    paint('bold', '▌' + target.target),
    paint('green', 'UP'),
    `cpu ${p.cpuCores === null ? NONE : fmtPct(p.cpuCores, 0)}${cpuSpark}`,
    `rss ${fmtBytes(p.residentBytes)}`,
    `heap ${fmtBytes(p.heapUsedBytes)}`,
    `in-flight ${fmtNumber(target.inFlight)}`,
    `loop p99 ${fmtMs(p.eventLoopLagP99Ms)}`,
    `up ${fmtDuration(p.uptimeSeconds)}`,
  ]
  const lines = [truncate(head.join('  '), options.columns)]
  if (target.models.length === 0) return [...lines, paint('dim', '  no models loaded or requested yet')]
  const columns = fitColumns(modelColumns(target, frame, options, paint), options.columns)
  const table = tableLines(columns, target.models, paint)
  const room = Math.max(2, maxRows - 1)
  if (table.length > room) {
    const hidden = table.length - (room - 1)
    return [...lines, ...table.slice(0, room - 1), paint('dim', `  … ${hidden} more model version(s); enlarge the terminal`)]
  }
  return [...lines, ...table]
}

function epochSpark(values: Array<number | undefined>, width: number): string {
  const present = values.map((v) => (v === undefined ? null : v))
  if (present.length <= width) return sparkline(present)
  // More epochs than cells: each cell shows the mean of its share of epochs.
  const points = present.map((v, i) => ({t: i, v}))
  return sparkline(resample(points, 0, present.length - 1, width))
}

function runLines(frame: Frame, options: RenderOptions, paint: Paint, maxRows: number): string[] {
  if (frame.runError !== undefined) return [`${paint('bold', '▌run')}  ${paint('red', frame.runError)}`]
  const run = frame.run
  if (!run) return []
  const statusColour = run.status === 'running' ? 'cyan' : run.status === 'completed' ? 'green' : 'red'
  const fraction = run.epochs > 0 ? run.epochsCompleted / run.epochs : 0
  const head = [
    paint('bold', `▌run ${run.runId}`),
    paint(statusColour, run.status),
    `epoch ${run.epochsCompleted}/${run.epochs} ${bar(fraction, 12)} ${Math.round(fraction * 100)}%`,
    `${fmtNumber(run.imagesPerSec)} img/s`,
    run.etaSeconds === null ? '' : `eta ${fmtDuration(run.etaSeconds)}`,
    run.best ? `best val acc ${fmtPct(run.best.valAccuracy)} @${run.best.epoch}` : '',
    run.backend,
  ].filter(Boolean)
  const lines = [truncate(head.join('  '), options.columns)]
  if (run.error) lines.push(paint('red', truncate(`  ${run.error}`, options.columns)))
  const m = run.metrics
  const last = run.latest
  const sw = Math.max(6, Math.min(60, Math.floor((options.columns - 44) / 2)))
  const curve = (label: string, key: 'loss' | 'accuracy', valKey: 'valLoss' | 'valAccuracy', fmt: (v: number | undefined) => string) =>
    truncate(
      `  ${label.padEnd(9)}${padStart(fmt(last?.[key]), 8)} ${paint('yellow', padEnd(epochSpark(m.map((e) => e[key]), sw), sw))}  val ${padStart(fmt(last?.[valKey]), 8)} ${paint('cyan', epochSpark(m.map((e) => e[valKey]), sw))}`,
      options.columns,
    )
  lines.push(curve('loss', 'loss', 'valLoss', (v) => (v === undefined ? NONE : v.toFixed(4))))
  lines.push(curve('accuracy', 'accuracy', 'valAccuracy', (v) => (v === undefined ? NONE : fmtPct(v))))
  const plotRows = Math.min(10, maxRows - lines.length - 1)
  if (plotRows >= 3 && m.length >= 2) {
    const label = 8
    const panels = options.columns >= 80 ? 2 : 1
    const panelWidth = Math.floor((options.columns - 2) / panels) - label - 2
    const plot = (key: 'loss' | 'accuracy', valKey: 'valLoss' | 'valAccuracy') => {
      const values = m.flatMap((e) => [e[key], e[valKey]]).filter((v): v is number => v !== undefined && Number.isFinite(v))
      const min = Math.min(...values)
      const max = Math.max(...values)
      const rows = braillePlot(
        [
          {values: m.map((e) => e[key]), colour: 'yellow'},
          {values: m.map((e) => e[valKey] ?? null), colour: 'cyan'},
        ],
        panelWidth,
        plotRows,
        paint,
        {min, max},
      )
      const fmt = (v: number) => (key === 'loss' ? v.toFixed(3) : fmtPct(v, 1))
      return rows.map((r, i) => padStart(i === 0 ? fmt(max) : i === rows.length - 1 ? fmt(min) : '', label) + ' ┤' + r)
    }
    const left = plot('loss', 'valLoss')
    const right = panels === 2 ? plot('accuracy', 'valAccuracy') : []
    const panelColumns = Math.floor((options.columns - 2) / panels)
    const legend = `(${paint('yellow', 'train')}, ${paint('cyan', 'validation')})`
    lines.push(padEnd(`  loss by epoch ${legend}`, panelColumns) + (panels === 2 ? `  accuracy by epoch ${legend}` : ''))
    for (let i = 0; i < left.length; i++) lines.push(truncate(padEnd(left[i]!, panelColumns) + (right[i] ?? ''), options.columns))
  }
  return lines
}

function ingestLines(frame: Frame, options: RenderOptions, paint: Paint): string[] {
  const ingest = frame.ingest
  if (!ingest) return []
  if (!ingest.up) return [`${paint('bold', '▌ingest ' + ingest.target)}  ${paint('red', 'DOWN')}  ${ingest.error ?? ''}`]
  const to = frame.at
  const from = to - options.historySeconds * 1000
  const parts = [
    paint('bold', '▌ingest ' + ingest.target),
    paint('green', 'UP'),
    `${fmtRate(ingest.recordsPerSec)} rec/s ${paint('cyan', spark(options.history(seriesKey('ingest', 'rate')), from, to, 10))}`,
    `lag ${fmtNumber(ingest.lag)} ${paint('magenta', spark(options.history(seriesKey('ingest', 'lag')), from, to, 10, {min: 0}))}`,
    `rejects ${fmtRate(ingest.rejectsPerSec)}/s (${fmtNumber(ingest.totals.rejected)} total)`,
    `dataset v${fmtNumber(ingest.totals.datasetVersion)} ${fmtNumber(ingest.totals.datasetExamples)} examples`,
    `${fmtNumber(ingest.totals.commits)} commits`,
  ]
  return [truncate(parts.join('  '), options.columns)]
}

/** Lays out a frame: at most `rows` lines, none wider than `columns`. */
export function renderDashboard(frame: Frame, options: RenderOptions): string[] {
  const paint = painter(options.colour)
  const columns = Math.max(20, options.columns)
  // A dashboard just started spans the time it has data for (at least 20 refreshes), growing to
  // monitor.history, so that its first minute is not squeezed into the last cell of a 5-minute axis.
  const elapsed = frame.since === undefined ? options.historySeconds : (frame.at - frame.since) / 1000
  const span = Math.min(options.historySeconds, Math.max(elapsed, (20 * options.refreshMs) / 1000))
  const opts = {...options, columns, historySeconds: span}
  const rows = Math.max(3, options.rows)
  const every = options.refreshMs < 1000 ? `${options.refreshMs}ms` : fmtDuration(options.refreshMs / 1000)
  const header = `${paint('bold', 'ml monitor')}  ${frame.targets.length} target(s)  every ${every}  ${clock(frame.at)}`
  const footer = paint('dim', `sparklines: last ${spanText(span)}${span < options.historySeconds ? ` (growing to ${spanText(options.historySeconds)})` : ''}  ·  q or Ctrl-C quits`)
  const lines = [truncate(header, columns)]
  const ingest = ingestLines(frame, opts, paint)
  const fixed = 2 + ingest.length + (frame.run || frame.runError !== undefined ? 3 : 0)
  let budget = rows - fixed
  const perTarget = Math.max(3, Math.floor(budget / Math.max(1, frame.targets.length)))
  for (const target of frame.targets) {
    const block = targetLines(target, frame, opts, paint, Math.min(perTarget, budget) - 1)
    lines.push(...block)
    budget -= block.length
  }
  lines.push(...ingest)
  lines.push(...runLines(frame, opts, paint, rows - lines.length - 1))
  if (lines.length > rows - 1) {
    const cut = lines.length - (rows - 2)
    lines.length = rows - 2
    lines.push(paint('dim', `… ${cut} more line(s); enlarge the terminal`))
  }
  lines.push(footer)
  return lines.map((l) => (visibleWidth(l) > columns ? truncate(l, columns) : l))
}
