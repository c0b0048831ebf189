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
  const started = performance.now()
  let total = options.total
  const rate = (done: number) => done / Math.max((performance.now() - started) / 1000, 1e-3)

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

  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${options.label} {bar} {percentage}% | {value}/{total} ${unit} | {rate} ${unit}/s | eta {etaText} {status}`,
      barsize: 24,
      hideCursor: true,
      clearOnComplete: true,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  )
  bar.start(total ?? 0, 0, {rate: '0', etaText: '--', status: ''})
  return {
    update(done, status, newTotal) {
      if (newTotal !== undefined && newTotal !== total) {
        total = newTotal
        bar.setTotal(newTotal)
      }
      const r = rate(done)
      bar.update(done, {rate: r.toFixed(0), etaText: total ? formatEta((total - done) / r) : '--', status: status ?? ''})
    },
    log(line) {
      bar.stop()
      stream.write(line + '\n')
      bar.start(total ?? 0, 0, {rate: '0', etaText: '--', status: ''})
    },
    stop() {
      bar.stop()
    },
  }
}

/** Human-friendly fixed-width number. */
export function fmt(value: number | undefined, digits = 4): string {
  return value === undefined || Number.isNaN(value) ? '-' : value.toFixed(digits)
}
