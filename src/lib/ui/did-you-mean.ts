// "Did you mean ...?": the closest known name to a mistyped one (commands, config keys), by edit
// distance, only when it is close enough to be a typo rather than another word.
import {distance} from 'fastest-levenshtein'

/** The candidate nearest to `input`, if within a typo's distance (a third of its length rounded up, at most 3). */
export function closest(input: string, candidates: Iterable<string>): string | undefined {
  const limit = Math.min(3, Math.max(1, Math.ceil(input.length / 3)))
  let best: {name: string; d: number} | undefined
  for (const name of candidates) {
    const d = distance(input.toLowerCase(), name.toLowerCase())
    if (d <= limit && (best === undefined || d < best.d)) best = {name, d}
  }
  return best?.name
}
