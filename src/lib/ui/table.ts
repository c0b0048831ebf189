// Fixed-width text tables for terminal output (runs, models, tuning trials, evaluation): one header
// line, a rule, then rows; columns as wide as their widest cell, trailing blanks trimmed.

export interface TableOptions {
  /** Per column: 'right' for numbers (default 'left'). */
  align?: ReadonlyArray<'left' | 'right' | undefined>
}

/** Renders rows of cells under headers; a missing cell prints as "-". */
export function textTable(headers: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number | undefined>>, options: TableOptions = {}): string {
  const cells = rows.map((row) => headers.map((_, i) => (row[i] === undefined ? '-' : String(row[i]))))
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const pad = (v: string, i: number) => (options.align?.[i] === 'right' ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))
  const line = (c: readonly string[]) => c.map(pad).join('  ').trimEnd()
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n')
}
