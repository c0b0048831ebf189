// Tests of the content-hash split: stable per key whatever else is added, and close to the asked
// fractions over many keys.
import assert from 'node:assert/strict'
import {createHash} from 'node:crypto'
import {describe, it} from 'node:test'
import {splitOf} from '../../../src/lib/data/splits.js'

const keyOf = (i: number) => createHash('sha256').update(`image ${i}`).digest('hex')
const rule = {validation: 0.1, test: 0.2, seed: 0}

describe('splitOf', () => {
  it('gives a key the same split however many keys exist around it', () => {
    const first = Array.from({length: 1000}, (_, i) => splitOf(keyOf(i), rule))
    // A "later ingest": many more keys, processed in another order.
    const later = new Map<number, string>()
    for (let i = 5000; i >= 0; i--) later.set(i, splitOf(keyOf(i), rule))
    for (let i = 0; i < 1000; i++) assert.equal(later.get(i), first[i], `key ${i} moved`)
  })

  it('respects the fractions over 10k keys', () => {
    const counts = {train: 0, validation: 0, test: 0}
    for (let i = 0; i < 10_000; i++) counts[splitOf(keyOf(i), rule)]++
    // Binomial sd at n = 10k is about 0.4%; 1.5% is well over 3 sd.
    assert.ok(Math.abs(counts.validation / 10_000 - 0.1) < 0.015, `validation ${counts.validation}`)
    assert.ok(Math.abs(counts.test / 10_000 - 0.2) < 0.015, `test ${counts.test}`)
    assert.equal(counts.train + counts.validation + counts.test, 10_000)
  })

  it('depends on the seed, and handles zero fractions', () => {
    const a = Array.from({length: 200}, (_, i) => splitOf(keyOf(i), rule))
    const b = Array.from({length: 200}, (_, i) => splitOf(keyOf(i), {...rule, seed: 1}))
    assert.notDeepEqual(a, b)
    for (let i = 0; i < 200; i++) assert.equal(splitOf(keyOf(i), {validation: 0, test: 0, seed: 3}), 'train')
  })

  it('only moves train images when a fraction grows', () => {
    for (let i = 0; i < 2000; i++) {
      const before = splitOf(keyOf(i), rule)
      const after = splitOf(keyOf(i), {...rule, validation: 0.15})
      if (before !== after) assert.deepEqual([before, after], ['train', 'validation'])
    }
  })
})
