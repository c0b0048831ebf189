// The live dashboard loop: one tick per refresh, redrawn in place on a terminal (alternate screen,
// no flicker, follows resizes; q or Ctrl-C quits) or appended as plain frames when output is a pipe.
import {sleep} from '../abortable.js'
import {Collector, type CollectorOptions, type Frame} from './collector.js'
import {renderDashboard, type RenderOptions} from './render.js'

export interface LiveOptions extends CollectorOptions {
  refreshMs: number
  slo?: RenderOptions['slo']
  colour: boolean
  output: NodeJS.WriteStream
  input?: NodeJS.ReadStream
  /** Stop after this many frames (scripts and tests); default: until q, Ctrl-C or SIGTERM. */
  frames?: number
  signal?: AbortSignal
}

const ENTER = '\x1b[?1049h\x1b[?25l'
const LEAVE = '\x1b[?25h\x1b[?1049l'
const HOME = '\x1b[H'
const CLEAR_LINE = '\x1b[K'
const CLEAR_BELOW = '\x1b[J'

export async function runLive(options: LiveOptions): Promise<{frames: number}> {
  const out = options.output
  const tty = out.isTTY === true
  const collector = new Collector(options)
  const stop = new AbortController()
  options.signal?.addEventListener('abort', () => stop.abort(), {once: true})
  const onSignal = () => stop.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const input = options.input
  const rawInput = tty && input?.isTTY === true
  const onKey = (data: Buffer) => {
    const key = data.toString()
    if (key === 'q' || key === 'Q' || key === '\u0003') stop.abort()
  }
  let last: Frame | undefined
  const size = () => ({columns: tty ? (out.columns ?? 100) : 120, rows: tty ? (out.rows ?? 40) : 200})
  const draw = () => {
    if (!last) return
    const lines = renderDashboard(last, {...size(), colour: options.colour && tty, refreshMs: options.refreshMs, historySeconds: options.historySeconds, slo: options.slo, history: (k) => collector.history(k)})
    if (tty) out.write(HOME + lines.map((l) => l + CLEAR_LINE).join('\n') + CLEAR_BELOW)
    else out.write(lines.join('\n') + '\n\n')
  }
  const onResize = () => draw()
  if (tty) {
    out.write(ENTER)
    out.on('resize', onResize)
  }
  if (rawInput) {
    input!.setRawMode(true)
    input!.resume()
    input!.on('data', onKey)
  }
  let frames = 0
  try {
    while (!stop.signal.aborted) {
      const started = Date.now()
      last = await collector.tick()
      if (stop.signal.aborted) break
      draw()
      frames++
      if (options.frames !== undefined && frames >= options.frames) break
      await sleep(Math.max(0, options.refreshMs - (Date.now() - started)), stop.signal)
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    if (rawInput) {
      input!.off('data', onKey)
      input!.setRawMode(false)
      input!.pause()
    }
    if (tty) {
      out.off('resize', onResize)
      out.write(LEAVE)
    }
  }
  return {frames}
}
