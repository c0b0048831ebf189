import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {giveFloats, pooledFloatBytes, takeFloats} from '../../../src/lib/serve/floats.js'

describe('request float arrays (reused)', () => {
  it('hands an array given back to the next request of its length, once', () => {
    const a = takeFloats(1001)
    giveFloats(a)
    giveFloats(a)
    assert.equal(takeFloats(1001), a)
    assert.notEqual(takeFloats(1001), a, 'given back twice, handed out once')
    assert.notEqual(takeFloats(1002), a)
  })

  it('keeps only arrays it handed out, and no more than its bound', () => {
    const foreign = new Float32Array(1003)
    giveFloats(foreign)
    assert.notEqual(takeFloats(1003), foreign)
    const before = pooledFloatBytes()
    // 64 MB at most: the 17th 4 MB array is not kept.
    const big = Array.from({length: 17}, () => takeFloats(1 << 20))
    for (const array of big) giveFloats(array)
    assert.ok(pooledFloatBytes() - before <= 64 * 1024 * 1024, `${pooledFloatBytes()} bytes pooled`)
    const back = Array.from({length: 17}, () => takeFloats(1 << 20))
    assert.equal(back.filter((array) => big.includes(array)).length, 16)
    for (const array of back) giveFloats(array)
  })
})
