// Fixed-width text tables for terminal output (runs, models, tuning trials): one header line, a rule,
// then rows; columns as wide as their widest cell, trailing blanks trimmed.

/** Renders rows of cells under headers; a missing cell prints as "-". */
export function textTable(headers: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | undefined>>): string {
  const cells = rows.map((row) => headers.map((_, i) => row[i] ?? '-'))
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: readonly string[]) => c.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n')
}
