// Prediction drift: the served model's predicted-class shares over a window against the class priors
// it was trained on (dataset manifest counts), as a population stability index and a chi-square test.
import type {DatasetManifest, SplitName} from '../data/types.js'

export interface ClassShare {
  class: string
  /** Share of the class in the training split. */
  expected: number
  /** Share of predictions in the window. */
  observed: number
  count: number
}

export interface DriftResult {
  samples: number
  /** Population stability index; null without samples. Rule of thumb: < 0.1 stable, > 0.25 shifted. */
  psi: number | null
  chiSquare: {statistic: number; dof: number; pValue: number} | null
  classes: ClassShare[]
  /** Predicted classes the training data does not have (a different model, or a relabelled one). */
  unknownClasses: string[]
}

/** Shares below this are raised to it, so that a class never predicted does not make PSI infinite. */
export const PSI_EPSILON = 1e-4

/** Class shares of one split from the manifest's counts (default: train, what the model learnt). */
export function classPriors(manifest: Pick<DatasetManifest, 'classes' | 'counts'>, split: SplitName = 'train'): Record<string, number> {
  const counts = manifest.counts[split] ?? {}
  const total = manifest.classes.reduce((sum, c) => sum + (counts[c] ?? 0), 0)
  const priors: Record<string, number> = {}
  for (const c of manifest.classes) priors[c] = total > 0 ? (counts[c] ?? 0) / total : 1 / manifest.classes.length
  return priors
}

function smooth(shares: readonly number[]): number[] {
  const raised = shares.map((s) => Math.max(s, PSI_EPSILON))
  const total = raised.reduce((a, b) => a + b, 0)
  return raised.map((s) => s / total)
}

/** PSI = sum((observed - expected) * ln(observed / expected)) over classes, on smoothed shares. */
export function populationStabilityIndex(expected: readonly number[], observed: readonly number[]): number {
  if (expected.length !== observed.length) throw new Error('populationStabilityIndex: length mismatch')
  const e = smooth(expected)
  const o = smooth(observed)
  let psi = 0
  for (let i = 0; i < e.length; i++) psi += (o[i]! - e[i]!) * Math.log(o[i]! / e[i]!)
  return psi
}

// Lanczos approximation (g = 7, n = 9): about 15 significant digits for x > 0.
const LANCZOS = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7]

export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x)
  x -= 1
  let a = LANCZOS[0]!
  const t = x + 7.5
  for (let i = 1; i < 9; i++) a += LANCZOS[i]! / (x + i)
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a)
}

/** The regularised upper incomplete gamma function Q(a, x) (series below a + 1, continued fraction above). */
export function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1
  if (x < a + 1) {
    let sum = 1 / a
    let term = sum
    for (let n = 1; n < 1000; n++) {
      term *= x / (a + n)
      sum += term
      if (Math.abs(term) < Math.abs(sum) * 1e-15) break
    }
    return Math.max(0, 1 - sum * Math.exp(-x + a * Math.log(x) - logGamma(a)))
  }
  // Lentz's method for the continued fraction.
  const tiny = 1e-300
  let b = x + 1 - a
  let c = 1 / tiny
  let d = 1 / b
  let h = d
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a)
    b += 2
    d = an * d + b
    if (Math.abs(d) < tiny) d = tiny
    c = b + an / c
    if (Math.abs(c) < tiny) c = tiny
    d = 1 / d
    const delta = d * c
    h *= delta
    if (Math.abs(delta - 1) < 1e-15) break
  }
  return Math.exp(-x + a * Math.log(x) - logGamma(a)) * h
}

/** Pearson's goodness-of-fit test of counts against expected shares (classes with a zero prior are left out). */
export function chiSquareTest(counts: readonly number[], expected: readonly number[]): {statistic: number; dof: number; pValue: number} {
  const n = counts.reduce((a, b) => a + b, 0)
  let statistic = 0
  let cells = 0
  for (let i = 0; i < counts.length; i++) {
    const e = expected[i]! * n
    if (e <= 0) continue
    statistic += (counts[i]! - e) ** 2 / e
    cells++
  }
  const dof = Math.max(1, cells - 1)
  return {statistic, dof, pValue: gammaQ(dof / 2, statistic / 2)}
}

/** Compares predicted-class counts with the training priors. */
export function predictionDrift(priors: Record<string, number>, counts: Record<string, number>): DriftResult {
  const classes = Object.keys(priors)
  const unknownClasses = Object.keys(counts).filter((c) => !(c in priors) && counts[c]! > 0)
  const samples = Object.values(counts).reduce((a, b) => a + b, 0)
  const known = classes.map((c) => counts[c] ?? 0)
  const knownTotal = known.reduce((a, b) => a + b, 0)
  const expected = classes.map((c) => priors[c]!)
  const observed = known.map((k) => (knownTotal > 0 ? k / knownTotal : 0))
  return {
    samples,
    psi: knownTotal > 0 ? populationStabilityIndex(expected, observed) : null,
    chiSquare: knownTotal > 0 ? chiSquareTest(known, expected) : null,
    classes: classes.map((c, i) => ({class: c, expected: expected[i]!, observed: observed[i]!, count: known[i]!})),
    unknownClasses,
  }
}
