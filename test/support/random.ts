// Seeded randomness for test data: the same values on every run and on every backend.
import seedrandom from 'seedrandom'

export function seededRandom(seed: number): () => number {
  return seedrandom.alea(String(seed))
}
