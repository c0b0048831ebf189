// Canary traffic splits: which of two versions of a model a request that names no version goes to.
// The choice is deterministic, so that a split is exact and testable: by count (request i of every
// 10,000 goes to the canary when the running share of canary requests falls behind `percent`), or,
// with a sticky header, by a hash of its value, so that one caller stays on one version.

/** serve.models[].split: versions by number or label/alias, as KServe's canaryTrafficPercent. */
export interface TrafficSplit {
  stable: number | string
  canary: number | string
  /** Share of requests sent to the canary, 0-100. */
  percent: number
  /** A request header whose value pins each caller to one version. */
  stickyHeader?: string
}

export type SplitRole = 'stable' | 'canary'

/** Shares are counted in hundredths of a percent. */
const PARTS = 10_000

/** 32-bit FNV-1a of a string's UTF-8 bytes: small, fast and the same in every process. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash
}

export class Splitter {
  private readonly share: number
  private count = 0

  constructor(percent: number) {
    this.share = Math.round(Math.min(100, Math.max(0, percent)) * (PARTS / 100))
  }

  /**
   * The role of the next request. Without a key, request i goes to the canary when
   * floor((i + 1) * share) passes floor(i * share): exactly `percent` of every 10,000 requests, spread
   * evenly (10%: the 10th, 20th, ...). With a key, the key's hash decides.
   */
  next(key?: string): SplitRole {
    if (key !== undefined) return fnv1a(key) % PARTS < this.share ? 'canary' : 'stable'
    const i = this.count
    this.count = (this.count + 1) % PARTS
    return Math.floor(((i + 1) * this.share) / PARTS) > Math.floor((i * this.share) / PARTS) ? 'canary' : 'stable'
  }
}
