// Comparing trained models in tests: the weights of a run's saved model, and their largest difference.
import assert from 'node:assert/strict'
import path from 'node:path'
import {loadModel} from '../../src/lib/model/artifact.js'

export async function weightsOf(runDir: string): Promise<Float32Array[]> {
  const model = await loadModel(path.join(runDir, 'model'))
  const values = model.getWeights().map((w) => w.dataSync() as Float32Array)
  model.dispose()
  return values
}

export function maxAbsDiff(a: Float32Array[], b: Float32Array[]): number {
  assert.equal(a.length, b.length, 'different number of weight tensors')
  let max = 0
  a.forEach((x, i) => {
    assert.equal(x.length, b[i]!.length, `weight ${i} has a different size`)
    for (let k = 0; k < x.length; k++) max = Math.max(max, Math.abs(x[k]! - b[i]![k]!))
  })
  return max
}
