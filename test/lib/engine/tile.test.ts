import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {initEngine} from '../../../src/lib/engine/backend.js'

const CASES: Array<{shape: number[]; reps: number[]; dtype: 'float32' | 'int32' | 'bool'}> = [
  {shape: [1, 1, 1, 4], reps: [3, 5, 2, 1], dtype: 'float32'},
  {shape: [2, 3], reps: [2, 2], dtype: 'float32'},
  {shape: [4], reps: [3], dtype: 'int32'},
  {shape: [2, 1, 3], reps: [1, 4, 1], dtype: 'float32'},
  {shape: [3, 2], reps: [1, 1], dtype: 'int32'},
  {shape: [2, 2], reps: [2, 3], dtype: 'bool'},
  {shape: [0, 2], reps: [3, 2], dtype: 'float32'},
]

describe('wasm Tile kernel', () => {
  for (const {shape, reps, dtype} of CASES) {
    it(`matches cpu for shape [${shape}] reps [${reps}] ${dtype}`, async () => {
      const size = shape.reduce((a, b) => a * b, 1)
      const values = Array.from({length: size}, (_, i) => (dtype === 'bool' ? i % 2 : i * 1.5 - 3))
      const results: Record<string, unknown[]> = {}
      for (const backend of ['cpu', 'wasm'] as const) {
        await initEngine(backend)
        const x = tf.tensor(values, shape, dtype)
        const y = tf.tile(x, reps)
        assert.deepEqual(y.shape, shape.map((d, i) => d * reps[i]!))
        results[backend] = Array.from(await y.data())
        tf.dispose([x, y])
      }
      assert.deepEqual(results.wasm, results.cpu)
    })
  }
})
