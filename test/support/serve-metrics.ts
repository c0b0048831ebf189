// Reading Prometheus text exposition in tests: a series' value summed over the samples whose labels
// match, and the metric families present, so tests check /metrics as a scraper would see it.

export function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0
  let found = false
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line)
    if (match === null || match[1] !== name) continue
    const have: Record<string, string> = {}
    for (const pair of (match[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have[pair[1]!] = pair[2]!
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      total += Number(match[4])
      found = true
    }
  }
  return found ? total : Number.NaN
}

/** Names of every metric family with a HELP line. */
export function families(text: string): Set<string> {
  return new Set([...text.matchAll(/^# HELP (\S+) /gm)].map((m) => m[1]!))
}
