import assert from 'node:assert/strict'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {bytesPerExample, microBatchFor} from '../../../src/lib/train/replica.js'
import {runTraining} from '../../../src/lib/train/trainer.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'
import {maxAbsDiff, weightsOf} from '../../support/weights.js'

describe('micro-batches', () => {
  let dir: string
  let cleanup: () => Promise<void>

  before(async () => {
    await initEngine('wasm')
    ;({dir, cleanup} = await tempDir())
    await mnistFolders(dir, 200, 20)
  })
  after(() => cleanup())

  it('sizes the micro-batch from the activations of one example', () => {
    const model = tf.sequential({layers: [tf.layers.conv2d({inputShape: [64, 64, 3], filters: 16, kernelSize: 3, padding: 'same'}), tf.layers.flatten(), tf.layers.dense({units: 2})]})
    // conv 64*64*16 + flatten 64*64*16 + dense 2 values, float32, twice (kept for backward + gradient).
    assert.equal(bytesPerExample(model), (65536 * 2 + 2) * 4 * 2)
    assert.equal(microBatchFor(model, 10 * bytesPerExample(model) + 1), 10)
    assert.equal(microBatchFor(model, 1), 1, 'never below one example')
    model.dispose()
  })

  it('accumulates micro-batch gradients into the same update as the whole batch', async () => {
    const train = {epochs: 1, batchSize: 32, learningRate: 0.01}
    // mlp has dropout: its masks are keyed by row in the global batch, so slicing does not change them.
    const whole = await writeMnistConfig(dir, {name: 'whole', model: {preset: 'mlp'}, train: {...train, microBatch: 32}})
    const loadedWhole = await loadConfig(whole)
    await runIngest({config: loadedWhole.config, baseDir: loadedWhole.baseDir})
    const a = await runTraining({loaded: loadedWhole, runId: 'whole'})
    const sliced = await writeMnistConfig(dir, {name: 'sliced', model: {preset: 'mlp'}, train: {...train, microBatch: 5}})
    const b = await runTraining({loaded: await loadConfig(sliced), runId: 'sliced'})
    assert.ok(Math.abs(a.loss - b.loss) < 1e-5, `loss ${a.loss} vs ${b.loss}`)
    const diff = maxAbsDiff(await weightsOf(path.join(a.runDir)), await weightsOf(b.runDir))
    assert.ok(diff < 1e-5, `micro-batched weights differ by ${diff}`)
  })
})
