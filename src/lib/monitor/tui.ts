// Terminal drawing primitives for the dashboard: sparklines, braille line plots, bars, colour and
// width-aware padding (ANSI escapes take no columns), all pure functions of their input.

const TICKS = '▁▂▃▄▅▆▇█'

const ANSI = /\x1b\[[0-9;]*m/g

export type Colour = 'red' | 'green' | 'yellow' | 'blue' | 'magenta' | 'cyan' | 'grey' | 'bold' | 'dim' | 'inverse'

const CODES: Record<Colour, [number, number]> = {
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  blue: [34, 39],
  magenta: [35, 39],
  cyan: [36, 39],
  grey: [90, 39],
  bold: [1, 22],
  dim: [2, 22],
  inverse: [7, 27],
}

export type Paint = (colour: Colour, text: string) => string

export function painter(enabled: boolean): Paint {
  return enabled ? (colour, text) => (text ? `\x1b[${CODES[colour][0]}m${text}\x1b[${CODES[colour][1]}m` : text) : (_, text) => text
}

export function stripAnsi(text: string): string {
  return text.replace(ANSI, '')
}

/** Columns a string takes on a terminal (every character we draw is one column wide). */
export function visibleWidth(text: string): number {
  return [...stripAnsi(text)].length
}

/** Cuts to `width` columns, keeping escapes intact and ending with … when something was cut. */
export function truncate(text: string, width: number): string {
  if (width <= 0) return ''
  if (visibleWidth(text) <= width) return text
  let out = ''
  let used = 0
  let i = 0
  let cutAnsi = false
  while (i < text.length) {
    const m = /^\x1b\[[0-9;]*m/.exec(text.slice(i))
    if (m) {
      out += m[0]
      i += m[0].length
      cutAnsi = true
      continue
    }
    const ch = String.fromCodePoint(text.codePointAt(i)!)
    if (used === width - 1) {
      out += '…'
      break
    }
    out += ch
    used++
    i += ch.length
  }
  return cutAnsi ? out + '\x1b[0m' : out
}

export function padEnd(text: string, width: number): string {
  const t = truncate(text, width)
  return t + ' '.repeat(Math.max(0, width - visibleWidth(t)))
}

export function padStart(text: string, width: number): string {
  const t = truncate(text, width)
  return ' '.repeat(Math.max(0, width - visibleWidth(t))) + t
}

/**
 * One character per value: ▁ for the lowest, █ for the highest; null (no data) is a space. The scale
 * starts at 0 for non-negative series so that a flat rate does not look like noise.
 */
export function sparkline(values: ReadonlyArray<number | null>, options: {min?: number; max?: number} = {}): string {
  const present = values.filter((v): v is number => v !== null && Number.isFinite(v))
  if (present.length === 0) return ' '.repeat(values.length)
  const min = options.min ?? Math.min(0, ...present)
  const max = options.max ?? Math.max(...present)
  const span = max - min
  return values
    .map((v) => {
      if (v === null || !Number.isFinite(v)) return ' '
      if (span <= 0) return v > 0 ? TICKS[3]! : TICKS[0]!
      const level = Math.round(((Math.min(max, Math.max(min, v)) - min) / span) * (TICKS.length - 1))
      return TICKS[level]!
    })
    .join('')
}

/** A horizontal progress bar of `width` cells. */
export function bar(fraction: number, width: number): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0))
  const full = Math.round(f * width)
  return '█'.repeat(full) + '░'.repeat(Math.max(0, width - full))
}

export interface PlotSeries {
  values: ReadonlyArray<number | null>
  colour?: Colour
}

// Braille dot bits by [column][row] within a 2x4 cell.
const DOTS = [
  [0x01, 0x02, 0x04, 0x40],
  [0x08, 0x10, 0x20, 0x80],
]

/**
 * A line plot in braille (2 x 4 dots per character) of `rows` lines and `columns` characters, with
 * the y range shared by every series and x spread over the longest one. Returns the lines, top first.
 */
export function braillePlot(series: readonly PlotSeries[], columns: number, rows: number, paint: Paint = painter(false), range?: {min: number; max: number}): string[] {
  const w = columns * 2
  const h = rows * 4
  const all = series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v)))
  const cells = Array.from({length: rows}, () => new Array<number>(columns).fill(0))
  const owner = Array.from({length: rows}, () => new Array<Colour | undefined>(columns).fill(undefined))
  if (all.length > 0 && columns > 0 && rows > 0) {
    const min = range?.min ?? Math.min(...all)
    const max = range?.max ?? Math.max(...all)
    const span = max - min || 1
    const n = Math.max(...series.map((s) => s.values.length))
    const xOf = (i: number) => (n <= 1 ? 0 : Math.round((i / (n - 1)) * (w - 1)))
    const yOf = (v: number) => h - 1 - Math.round(((Math.min(max, Math.max(min, v)) - min) / span) * (h - 1))
    const set = (x: number, y: number, colour?: Colour) => {
      const r = Math.floor(y / 4)
      const c = Math.floor(x / 2)
      if (r < 0 || r >= rows || c < 0 || c >= columns) return
      cells[r]![c]! |= DOTS[x % 2]![y % 4]!
      owner[r]![c] ??= colour
    }
    for (const s of series) {
      let prev: [number, number] | undefined
      s.values.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) {
          prev = undefined
          return
        }
        const point: [number, number] = [xOf(i), yOf(v)]
        if (prev) {
          // Joins consecutive points so that the curve reads as a line, not scattered dots.
          const steps = Math.max(Math.abs(point[0] - prev[0]), Math.abs(point[1] - prev[1]), 1)
          for (let k = 0; k <= steps; k++) set(Math.round(prev[0] + ((point[0] - prev[0]) * k) / steps), Math.round(prev[1] + ((point[1] - prev[1]) * k) / steps), s.colour)
        } else set(point[0], point[1], s.colour)
        prev = point
      })
    }
  }
  return cells.map((row, r) =>
    row
      .map((bits, c) => {
        const ch = bits ? String.fromCodePoint(0x2800 + bits) : ' '
        const colour = owner[r]![c]
        return bits && colour ? paint(colour, ch) : ch
      })
      .join(''),
  )
}

/** Mean of the points in each of `bins` equal time slices of [from, to]; null where there are none. */
export function resample(points: ReadonlyArray<{t: number; v: number | null}>, from: number, to: number, bins: number): Array<number | null> {
  const sums = new Array<number>(bins).fill(0)
  const counts = new Array<number>(bins).fill(0)
  const span = Math.max(1, to - from)
  for (const p of points) {
    if (p.v === null || !Number.isFinite(p.v) || p.t < from || p.t > to) continue
    const i = Math.min(bins - 1, Math.floor(((p.t - from) / span) * bins))
    sums[i]! += p.v
    counts[i]!++
  }
  return sums.map((s, i) => (counts[i] ? s / counts[i]! : null))
}
