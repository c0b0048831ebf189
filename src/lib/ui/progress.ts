// Progress for long work: a redrawing bar with rate and ETA on a terminal (stderr), an occasional
// plain line when stderr is a pipe (CI logs), and nothing under --json.
import cliProgress from 'cli-progress'

export interface Progress {
  /** `done` of `total` (total may be unknown), with a short status text. */
  update(done: number, status?: string, total?: number): void
  /** Prints a line above the bar (e.g. an epoch summary). */
  log(line: string): void
  stop(): void
}

export interface ProgressOptions {
  label: string
  total?: number
  unit?: string
  /** false under --json. */
  enabled: boolean
  stream?: NodeJS.WriteStream
  /** Widest status text passed to update(), so that the bar leaves room for it. */
  statusWidth?: number
  /** Plain-line interval for non-terminals, in ms. */
  lineIntervalMs?: number
}

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--'
  const s = Math.round(seconds)
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`
}

export function createProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stderr
  if (!options.enabled) return {update() {}, log() {}, stop() {}}
  const unit = options.unit ?? 'it'
  const startedAt = performance.now()
  let total = options.total
  const rate = (done: number) => done / Math.max((performance.now() - startedAt) / 1000, 1e-3)

  if (!stream.isTTY) {
    const interval = options.lineIntervalMs ?? 10_000
    let lastLine = performance.now()
    return {
      update(done, status, newTotal) {
        if (newTotal !== undefined) total = newTotal
        const now = performance.now()
        if (now - lastLine < interval) return
        lastLine = now
        const r = rate(done)
        const of = total ? `/${total}` : ''
        const eta = total ? ` eta ${formatEta((total - done) / r)}` : ''
        stream.write(`${options.label} ${done}${of} ${unit} (${r.toFixed(0)} ${unit}/s${eta})${status ? ' ' + status : ''}\n`)
      },
      log(line) {
        stream.write(line + '\n')
      },
      stop() {},
    }
  }

  const layout = barLayout(options.label, unit, stream.columns || 80, options.statusWidth ?? 0)
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: layout.format,
      barsize: layout.barsize,
      hideCursor: true,
      clearOnComplete: true,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  )
  // The bar is drawn from the first update on: before it, total and done are unknown ("100% 0/0").
  let drawn = false
  const start = () => {
    if (!drawn) bar.start(total ?? 0, 0, {rate: '0', etaText: '--', status: ''})
    drawn = true
  }
  return {
    update(done, status, newTotal) {
      if (newTotal !== undefined && newTotal !== total) {
        total = newTotal
        if (drawn) bar.setTotal(newTotal)
      }
      if (!drawn && !total && done === 0) return
      start()
      const r = rate(done)
      bar.update(done, {rate: r.toFixed(0), etaText: total ? formatEta((total - done) / r) : '--', status: status ?? ''})
    },
    log(line) {
      if (drawn) bar.stop()
      stream.write(line + '\n')
      if (drawn) bar.start(total ?? 0, 0, {rate: '0', etaText: '--', status: ''})
    },
    stop() {
      if (drawn) bar.stop()
    },
  }
}

/**
 * The bar's format for a terminal `columns` wide: the bar takes what the label, counts, rate, ETA and
 * a status of `statusWidth` characters leave, so that the line fits (cli-progress would cut it).
 */
export function barLayout(label: string, unit: string, columns: number, statusWidth: number): {format: string; barsize: number; fixedWidth: number} {
  // Widest values: "100% ", "99999/99999 ", "99999 <unit>/s ", "eta 99h59m "; the rate goes first when short of room.
  const base = label.length + 2 + '100% '.length + '99999/99999 '.length + 'eta 99h59m '.length + statusWidth
  const rateWidth = `99999 ${unit}/s `.length
  const withRate = columns - 1 - base - rateWidth >= 10
  const format = `${label} {bar} {percentage}% {value}/{total} ${withRate ? `{rate} ${unit}/s ` : ''}eta {etaText} {status}`
  const fixedWidth = base + (withRate ? rateWidth : 0)
  const barsize = Math.max(4, Math.min(30, columns - 1 - fixedWidth))
  return {format, barsize, fixedWidth}
}

/** Human-friendly fixed-width number. */
export function fmt(value: number | undefined, digits = 4): string {
  return value === undefined || Number.isNaN(value) ? '-' : value.toFixed(digits)
}
