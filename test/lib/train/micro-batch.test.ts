import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {stringify} from 'yaml'
import {after, before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {bytesPerExample, checkMemoryFits, microBatchFor} from '../../../src/lib/train/replica.js'
import {runTraining} from '../../../src/lib/train/trainer.js'
import {buildModel} from '../../../src/lib/model/build.js'
import {UserError} from '../../../src/lib/errors.js'
import {writePhotoFolders} from '../../../scripts/synthetic-photos.js'
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

  it('refuses up front a model whose one example, or whose train.microBatch, does not fit the engine', () => {
    const model = tf.sequential({layers: [tf.layers.conv2d({inputShape: [64, 64, 3], filters: 16, kernelSize: 3, padding: 'same'}), tf.layers.flatten(), tf.layers.dense({units: 2})]})
    const image = {height: 64, width: 64, channels: 3}
    const perExample = bytesPerExample(model)
    assert.throws(
      () => checkMemoryFits(model, {batchSize: 8, microBatch: 'auto'}, image, perExample - 1),
      (e) => e instanceof UserError && e.code === 'EXAMPLE_TOO_LARGE' && e.exitCode === 2 && /64x64x3/.test(e.message) && /no batch size fits/.test(e.message),
    )
    assert.throws(
      () => checkMemoryFits(model, {batchSize: 8, microBatch: 4}, image, 3 * perExample),
      (e) => e instanceof UserError && e.code === 'MICRO_BATCH_TOO_LARGE' && /at most 3 per pass/.test(e.message) && /train\.microBatch to 3/.test(e.suggestions.join(' ')),
    )
    // What fits passes: a micro-batch of 3, or auto, or a whole batch no larger than what fits.
    checkMemoryFits(model, {batchSize: 8, microBatch: 3}, image, 3 * perExample)
    checkMemoryFits(model, {batchSize: 8, microBatch: 'auto'}, image, perExample)
    checkMemoryFits(model, {batchSize: 2, microBatch: 4}, image, 3 * perExample)
    model.dispose()
  })

  it('says which preset the image size chose, and refuses photo-size batches that cannot fit before training', async () => {
    const photos = path.join(dir, 'big')
    await writePhotoFolders(path.join(photos, 'photos'), {perClass: 3, size: 32, classes: 2, format: 'png'})
    const write = async (name: string, size: number, model: object | undefined, train: object) => {
      const file = path.join(photos, `${name}.yaml`)
      const config = {
        name,
        data: {sources: [{type: 'folder', path: 'photos'}], image: {width: size, height: size, channels: 3}, split: {validation: 0, test: 0, seed: 0}, store: `store-${size}`},
        ...(model ? {model} : {}),
        train: {epochs: 1, batchSize: 6, backend: 'wasm', seed: 1, runs: 'runs', ...train},
      }
      await writeFile(file, stringify(config))
      const loaded = await loadConfig(file)
      return loaded
    }
    // 96x96 with no model: cnn-photo, and the train output says so.
    const small = await write('auto', 96, undefined, {})
    await runIngest({config: small.config, baseDir: small.baseDir})
    let notes: string[] = []
    await runTraining({loaded: small, runId: 'auto', onEvent: (e) => e.type === 'start' && (notes = e.notes)})
    assert.ok(notes.some((n) => /preset cnn-photo \(the default for 96x96 images/.test(n)), `notes: ${notes.join(' | ')}`)

    // 768x768 on the digits-size cnn preset: one example needs more than the engine holds.
    const big = await write('too-big', 768, {preset: 'cnn'}, {})
    await runIngest({config: big.config, baseDir: big.baseDir})
    await assert.rejects(runTraining({loaded: big, runId: 'too-big'}), (e) => e instanceof UserError && e.code === 'EXAMPLE_TOO_LARGE' && /768x768x3/.test(e.message) && /cnn-photo/.test(e.suggestions.join(' ')))
    // cnn-photo fits at 768 px; a train.microBatch above what fits is refused, naming what does.
    const photo = buildModel({preset: 'cnn-photo'}, {width: 768, height: 768, channels: 3, fit: 'fill'}, 2, 1)
    const fits = microBatchFor(photo)
    photo.dispose()
    const micro = await write('micro', 768, {preset: 'cnn-photo'}, {batchSize: fits + 1, microBatch: fits + 1})
    await assert.rejects(runTraining({loaded: micro, runId: 'micro'}), (e) => e instanceof UserError && e.code === 'MICRO_BATCH_TOO_LARGE' && e.message.includes(`at most ${fits} per pass`))
  })
})
