// A parser for the Prometheus text exposition format (0.0.4, and the OpenMetrics subset prom-client
// writes): prom-client only writes the format, so reading a server's /metrics needs this.

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'

export type Labels = Record<string, string>

export interface Sample {
  /** The series name as written, e.g. `ml_serve_request_duration_seconds_bucket`. */
  name: string
  labels: Labels
  value: number
  /** Milliseconds since the epoch, when the exposition gave one. */
  timestamp?: number
}

export interface MetricFamily {
  name: string
  type: MetricType
  help: string
  samples: Sample[]
}

export interface Exposition {
  families: Map<string, MetricFamily>
  samples: Sample[]
}

export class ExpositionError extends Error {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(`line ${line}: ${message}`)
    this.name = 'ExpositionError'
  }
}

const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped'])
// Suffixes that make a sample part of a histogram or summary family declared without them.
const FAMILY_SUFFIXES = ['_bucket', '_sum', '_count', '_total', '_created', '_gsum', '_gcount']

function parseValue(text: string, line: number): number {
  switch (text) {
    case '+Inf':
    case 'Inf':
      return Number.POSITIVE_INFINITY
    case '-Inf':
      return Number.NEGATIVE_INFINITY
    case 'NaN':
      return Number.NaN
  }
  const value = Number(text)
  // Number('') is 0 and Number('0x10') is 16: neither is a Prometheus float.
  if (text === '' || Number.isNaN(value) || /^[+-]?0x/i.test(text)) throw new ExpositionError(`invalid value "${text}"`, line)
  return value
}

function unescapeHelp(text: string): string {
  return text.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'))
}

/** Reads `{a="x",b="y"}` starting at `start` (the `{`); returns the labels and the index after `}`. */
function parseLabels(text: string, start: number, line: number): {labels: Labels; end: number} {
  const labels: Labels = {}
  let i = start + 1
  const skipSpace = () => {
    while (text[i] === ' ' || text[i] === '\t') i++
  }
  for (;;) {
    skipSpace()
    if (text[i] === '}') return {labels, end: i + 1}
    const nameMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(text.slice(i))
    if (!nameMatch) throw new ExpositionError(`invalid label name at column ${i + 1}`, line)
    const name = nameMatch[0]
    i += name.length
    skipSpace()
    if (text[i] !== '=') throw new ExpositionError(`expected "=" after label ${name}`, line)
    i++
    skipSpace()
    if (text[i] !== '"') throw new ExpositionError(`expected a quoted value for label ${name}`, line)
    i++
    let value = ''
    for (;;) {
      const c = text[i]
      if (c === undefined) throw new ExpositionError(`unterminated value of label ${name}`, line)
      if (c === '"') break
      if (c === '\\') {
        const next = text[i + 1]
        value += next === 'n' ? '\n' : next === '"' ? '"' : next === '\\' ? '\\' : '\\' + (next ?? '')
        i += 2
        continue
      }
      value += c
      i++
    }
    i++
    labels[name] = value
    skipSpace()
    if (text[i] === ',') i++
    else if (text[i] !== '}') throw new ExpositionError(`expected "," or "}" after label ${name}`, line)
  }
}

/** The family a sample belongs to: its own name, or the declared family it is a suffix of. */
function familyOf(name: string, declared: Map<string, MetricFamily>): string {
  if (declared.has(name)) return name
  for (const suffix of FAMILY_SUFFIXES) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length)
      if (declared.has(base)) return base
    }
  }
  return name
}

/** Parses a whole exposition. Throws an ExpositionError naming the line of the first problem. */
export function parseExposition(text: string): Exposition {
  const families = new Map<string, MetricFamily>()
  const samples: Sample[] = []
  const declare = (name: string): MetricFamily => {
    let family = families.get(name)
    if (family === undefined) families.set(name, (family = {name, type: 'untyped', help: '', samples: []}))
    return family
  }
  const lines = text.split('\n')
  for (let index = 0; index < lines.length; index++) {
    const lineNo = index + 1
    const line = lines[index]!.replace(/\r$/, '').trim()
    if (line === '') continue
    if (line.startsWith('#')) {
      const meta = /^#\s*(HELP|TYPE)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\s+(.*))?$/.exec(line)
      if (!meta) continue // A plain comment, or # EOF.
      const family = declare(meta[2]!)
      if (meta[1] === 'HELP') family.help = unescapeHelp(meta[3] ?? '')
      else {
        const type = (meta[3] ?? '').trim().toLowerCase()
        // OpenMetrics' extra types read as untyped; they carry no bucket semantics here.
        family.type = TYPES.has(type as MetricType) ? (type as MetricType) : 'untyped'
      }
      continue
    }
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)
    if (!nameMatch) throw new ExpositionError(`invalid metric name in "${line.slice(0, 40)}"`, lineNo)
    const name = nameMatch[0]
    let rest = name.length
    let labels: Labels = {}
    if (line[rest] === '{') {
      const parsed = parseLabels(line, rest, lineNo)
      labels = parsed.labels
      rest = parsed.end
    }
    const fields = line.slice(rest).trim().split(/\s+/)
    if (fields.length < 1 || fields[0] === '') throw new ExpositionError(`no value for ${name}`, lineNo)
    const sample: Sample = {name, labels, value: parseValue(fields[0]!, lineNo)}
    if (fields.length >= 2 && fields[1] !== '#') {
      const ts = Number(fields[1])
      if (!Number.isFinite(ts)) throw new ExpositionError(`invalid timestamp "${fields[1]}"`, lineNo)
      sample.timestamp = ts
    }
    samples.push(sample)
    declare(familyOf(name, families)).samples.push(sample)
  }
  return {families, samples}
}

/** Whether every label in `match` has that value in `labels` (a RegExp tests the whole value). */
export function labelsMatch(labels: Labels, match: Record<string, string | RegExp> = {}): boolean {
  for (const [key, want] of Object.entries(match)) {
    const got = labels[key] ?? ''
    if (typeof want === 'string' ? got !== want : !new RegExp(`^(?:${want.source})$`, want.flags).test(got)) return false
  }
  return true
}

/** Samples of one series name whose labels match. */
export function select(expo: Exposition, name: string, match?: Record<string, string | RegExp>): Sample[] {
  return expo.samples.filter((s) => s.name === name && labelsMatch(s.labels, match))
}

/** Sum of the matching samples' values (0 when there are none). */
export function sumOf(expo: Exposition, name: string, match?: Record<string, string | RegExp>): number {
  let total = 0
  for (const s of select(expo, name, match)) total += s.value
  return total
}

/** Whether any sample of the series exists: distinguishes "zero" from "not exported". */
export function has(expo: Exposition, name: string, match?: Record<string, string | RegExp>): boolean {
  return expo.samples.some((s) => s.name === name && labelsMatch(s.labels, match))
}

/** A stable key for a label set restricted to `keys`, for grouping (like PromQL `by`). */
export function groupKey(labels: Labels, keys: readonly string[]): string {
  return keys.map((k) => `${k}=${labels[k] ?? ''}`).join('\u0000')
}
