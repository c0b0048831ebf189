// Train/validation/test assignment by content hash: a pure function of (seed, key), so an image keeps
// its split whatever else is added to the dataset, and no image can leak from train into test later.
import {createHash} from 'node:crypto'
import type {SplitName} from '../config/schema.js'

export interface SplitFractions {
  validation: number
  test: number
  seed: number
}

/** A uniform number in [0, 1) derived from sha256(seed + key); 48 bits are plenty for fractions. */
export function splitPoint(key: string, seed: number): number {
  const digest = createHash('sha256').update(`${seed}:${key}`).digest()
  return digest.readUIntBE(0, 6) / 2 ** 48
}

/** The split of the image with dedupe key `key` (sha256 hex of its bytes). */
export function splitOf(key: string, fractions: SplitFractions): SplitName {
  const u = splitPoint(key, fractions.seed)
  // Test takes the bottom of the range and validation the top, so growing either fraction only
  // takes images from train and never moves an image between validation and test.
  if (u < fractions.test) return 'test'
  if (u >= 1 - fractions.validation) return 'validation'
  return 'train'
}
