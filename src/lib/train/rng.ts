// Seeded randomness for training: weight initialisation, shuffling and dropout masks all derive
// from train.seed, so a run is reproducible and a resumed run replays exactly.
import seedrandom from 'seedrandom'

export type Rng = () => number

/** A PRNG whose state can be saved in a checkpoint and restored. */
export interface StatefulRng {
  (): number
  state(): object
}

/** A PRNG for one purpose of one epoch: `rngFor(seed, 'shuffle', 3)`; `saved` restores a state. */
export function rngFor(seed: number, purpose: string, epoch = 0, saved?: object): StatefulRng {
  const state = (saved ?? true) as seedrandom.State.Alea | true
  return seedrandom.alea(`${seed}:${purpose}:${epoch}`, {state}) as unknown as StatefulRng
}

/**
 * Runs `fn` with Math.random replaced by a seeded generator. TensorFlow.js draws the seed of every
 * unseeded random op (initialisers, dropout) from Math.random, so this is what makes weight init and
 * dropout masks deterministic without a fixed mask per layer. `fn` must be synchronous: the swap is
 * global and must not leak across an await.
 */
export function withSeededRandom<T>(rng: Rng, fn: () => T): T {
  const original = Math.random
  Math.random = rng
  try {
    return fn()
  } finally {
    Math.random = original
  }
}

/** Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, rng: Rng): Uint32Array {
  const order = new Uint32Array(n)
  for (let i = 0; i < n; i++) order[i] = i
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    const t = order[i]!
    order[i] = order[j]!
    order[j] = t
  }
  return order
}
