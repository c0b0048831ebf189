import assert from 'node:assert/strict'
import {readdir, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {stringify} from 'yaml'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {UserError} from '../../../src/lib/errors.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {loadModel} from '../../../src/lib/model/artifact.js'
import {runTraining, type TrainEvent} from '../../../src/lib/train/trainer.js'
import {writePhotoFolders} from '../../../scripts/synthetic-photos.js'
import {tempDir} from '../../support/fixtures.js'
import {tinyBase, writeTinyBase, writeTinyGraphBase} from '../../support/bases.js'
import {BaseSchema, HeadSchema} from '../../../src/lib/config/schema.js'
import {loadBase} from '../../../src/lib/model/base.js'
import {buildTransferModel} from '../../../src/lib/model/head.js'
import {openModel} from '../../../src/lib/model/runtimes/index.js'
import {runExport} from '../../../src/lib/export/index.js'
import {maxAbsDiff, weightsOf} from '../../support/weights.js'

/** Each weight of the layer, as flat arrays. */
function layerWeights(model: tf.LayersModel, name: string): Float32Array[] {
  return model.getLayer(name).getWeights().map((w) => w.dataSync() as Float32Array)
}

const BASE_LAYERS = ['stem_conv', 'stem_bn', 'block_dw', 'block_dw_bn', 'block_project', 'block_project_bn']

describe('training on a pretrained base', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let reference: tf.LayersModel
  const previousCache = process.env.ML_CACHE_DIR

  async function writeConfig(name: string, model: object, train: object = {}): Promise<string> {
    const file = path.join(dir, `${name}.yaml`)
    await writeFile(
      file,
      stringify({
        name,
        data: {sources: [{type: 'folder', path: 'photos'}], image: {width: 16, height: 16, channels: 3}, split: {validation: 0.2, test: 0, seed: 0}, store: 'dataset'},
        model,
        train: {epochs: 2, batchSize: 16, backend: 'wasm', seed: 3, runs: 'runs', learningRate: 0.01, ...train},
      }),
    )
    return file
  }

  before(async () => {
    await initEngine('wasm')
    ;({dir, cleanup} = await tempDir())
    process.env.ML_CACHE_DIR = path.join(dir, 'cache')
    await writePhotoFolders(path.join(dir, 'photos'), {perClass: 24, size: 16, classes: 3, format: 'png'})
    await writeTinyBase(path.join(dir, 'base'))
    reference = tinyBase()
    const loaded = await loadConfig(await writeConfig('ingest', {preset: 'mlp'}))
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  })
  after(async () => {
    if (previousCache === undefined) delete process.env.ML_CACHE_DIR
    else process.env.ML_CACHE_DIR = previousCache
    await cleanup()
  })

  it('trains only the head on a frozen base, from features computed once and then cached', async () => {
    const config = await writeConfig('frozen', {base: {source: 'base'}, head: {hidden: [8], dropout: 0.1}})
    let notes: string[] = []
    const first = await runTraining({loaded: await loadConfig(config), runId: 'frozen-1', onEvent: (e) => e.type === 'start' && (notes = e.notes)})
    assert.ok(notes.some((n) => /computed once with onnxruntime/.test(n)), `notes: ${notes.join(' | ')}`)
    assert.equal(first.epochs, 2)
    const model = await loadModel(path.join(first.runDir, 'model'))
    for (const name of BASE_LAYERS) {
      assert.equal(maxAbsDiff(layerWeights(model, name), layerWeights(reference, name)), 0, `frozen layer ${name} changed`)
    }
    assert.deepEqual(model.inputs[0]!.shape, [null, 16, 16, 3])
    const entries = await readdir(path.join(dir, 'cache', 'features'))
    assert.equal(entries.length, 1)

    const second = await runTraining({loaded: await loadConfig(config), runId: 'frozen-2', onEvent: (e) => e.type === 'start' && (notes = e.notes)})
    assert.ok(notes.some((n) => /from the cache/.test(n)), `notes: ${notes.join(' | ')}`)
    const diff = maxAbsDiff(await weightsOf(first.runDir), await weightsOf(second.runDir))
    assert.ok(diff <= 1e-6, `cached features gave other weights (${diff})`)
  })

  it('trains the same head through the base when augmentation rules the cache out', async () => {
    // Shift 0 and no flip would cache; the flip forces the base to run on every batch.
    const config = await writeConfig('augmented', {base: {source: 'base'}}, {augment: {flipHorizontal: true}, epochs: 1})
    let notes: string[] = []
    const summary = await runTraining({loaded: await loadConfig(config), runId: 'augmented', onEvent: (e) => e.type === 'start' && (notes = e.notes)})
    assert.ok(notes.some((n) => /no feature cache/.test(n)), `notes: ${notes.join(' | ')}`)
    const model = await loadModel(path.join(summary.runDir, 'model'))
    for (const name of BASE_LAYERS) assert.equal(maxAbsDiff(layerWeights(model, name), layerWeights(reference, name)), 0, `frozen layer ${name} changed`)
  })

  it('fine-tunes exactly the asked base layers in the second phase, and resumes across the phase change exactly', async () => {
    const config = await writeConfig('tune', {base: {source: 'base'}, head: {dropout: 0.1}}, {epochs: 1, fineTune: {epochs: 2, learningRate: 0.005, unfreeze: 2}})
    const phases: Array<Extract<TrainEvent, {type: 'phase'}>> = []
    const whole = await runTraining({loaded: await loadConfig(config), runId: 'tune', onEvent: (e) => e.type === 'phase' && phases.push(e)})
    assert.equal(whole.epochs, 3)
    assert.deepEqual(phases.map((p) => [p.epoch, p.unfrozen]), [[1, ['block_project', 'block_project_bn']]])
    const model = await loadModel(path.join(whole.runDir, 'model'))
    for (const name of BASE_LAYERS) {
      const diff = maxAbsDiff(layerWeights(model, name), layerWeights(reference, name))
      if (name.startsWith('block_project')) assert.ok(diff > 0, `unfrozen layer ${name} did not train`)
      else assert.equal(diff, 0, `layer ${name} was not asked to unfreeze but changed`)
    }

    // Interrupted in the middle of the fine-tune phase, then resumed: the same weights.
    const abort = new AbortController()
    await assert.rejects(
      runTraining({
        loaded: await loadConfig(config),
        runId: 'tune-resumed',
        signal: abort.signal,
        onEvent: (e) => e.type === 'step' && e.epoch === 2 && e.step === 1 && abort.abort(),
      }),
      (e) => e instanceof UserError && e.code === 'INTERRUPTED',
    )
    const resumed = await runTraining({loaded: await loadConfig(config), resume: 'tune-resumed'})
    const diff = maxAbsDiff(await weightsOf(whole.runDir), await weightsOf(resumed.runDir))
    assert.ok(diff <= 1e-6, `resumed run differs by ${diff}`)

    // Interrupted exactly at the phase change (the checkpoint after the head phase), then resumed.
    const atBoundary = new AbortController()
    await assert.rejects(
      runTraining({
        loaded: await loadConfig(config),
        runId: 'tune-boundary',
        signal: atBoundary.signal,
        onEvent: (e) => e.type === 'epoch' && e.metrics.epoch === 1 && atBoundary.abort(),
      }),
      (e) => e instanceof UserError && e.code === 'INTERRUPTED',
    )
    const resumedAtBoundary = await runTraining({loaded: await loadConfig(config), resume: 'tune-boundary'})
    const boundaryDiff = maxAbsDiff(await weightsOf(whole.runDir), await weightsOf(resumedAtBoundary.runDir))
    assert.ok(boundaryDiff <= 1e-6, `run resumed at the phase change differs by ${boundaryDiff}`)
  })

  it('trains a head on a frozen graph-model base into one layers model that export, predict and serve run unchanged', async () => {
    await writeTinyGraphBase(path.join(dir, 'graph-base'))
    const config = await writeConfig('graph', {base: {source: 'graph-base'}, head: {hidden: [], dropout: 0}}, {epochs: 3, learningRate: 0.05})
    let notes: string[] = []
    const summary = await runTraining({loaded: await loadConfig(config), runId: 'graph', onEvent: (e) => e.type === 'start' && (notes = e.notes)})
    assert.ok(notes.some((n) => /computed once with tfjs/.test(n)), `notes: ${notes.join(' | ')}`)
    assert.equal(summary.epochs, 3)

    // The saved model = the graph's features (pooled "pooled" node) -> the trained softmax layer.
    const image = {width: 16, height: 16, channels: 3 as const, fit: 'fill' as const}
    const base = await loadBase(BaseSchema.parse({source: path.join(dir, 'graph-base')}), image)
    const model = await loadModel(path.join(summary.runDir, 'model'))
    const x = tf.randomUniform([5, 16, 16, 3], 0, 1, 'float32', 11) as tf.Tensor4D
    const [kernel, bias] = model.getLayer('probabilities').getWeights()
    const expected = tf.tidy(() => tf.softmax(tf.add(tf.matMul(base.extract(x), kernel!), bias!)))
    const got = model.predict(x) as tf.Tensor
    assert.ok(maxAbsDiff([(await got.data()) as Float32Array], [(await expected.data()) as Float32Array]) < 1e-5, 'the saved model is base features + head')
    // The head trained: its weights moved away from the seeded initial ones.
    const initial = buildTransferModel(base, HeadSchema.parse({hidden: [], dropout: 0}), 3, 3)
    assert.ok(maxAbsDiff(layerWeights(model, 'probabilities'), layerWeights(initial.model, 'probabilities')) > 1e-3, 'the head did not train')

    // What predict and serve open: ONNX cannot express the graph layer, so TensorFlow.js runs it.
    const opened = await openModel(path.join(summary.runDir, 'model'), [16, 16, 3])
    assert.equal(opened.choice.runtime, 'tfjs')
    const served = await opened.model.run((await x.data()) as Float32Array, 5)
    assert.ok(maxAbsDiff([served], [(await expected.data()) as Float32Array]) < 1e-5, 'predict/serve give the trained model\'s outputs')
    opened.model.dispose()

    // Export writes the tfjs model (graph inside) and says why there is no ONNX.
    const exported = await runExport({loaded: await loadConfig(config), run: 'graph', formats: ['tfjs', 'onnx'], dir: path.join(dir, 'graph-models')})
    assert.deepEqual(exported.formats.map((f) => f.format), ['tfjs'])
    assert.ok(exported.notes.some((n) => /MlGraphBase/.test(n) && /tfjs only/.test(n)), `notes: ${exported.notes.join(' | ')}`)
    const reloaded = await loadModel(exported.dir)
    const again = reloaded.predict(x) as tf.Tensor
    assert.ok(maxAbsDiff([(await again.data()) as Float32Array], [(await expected.data()) as Float32Array]) < 1e-5, 'the exported model gives the same outputs')
    tf.dispose([x, expected, got, again])
    for (const m of [model, reloaded, initial.model]) m.dispose()
    base.dispose()
  })

  it('trains data-parallel on a frozen base: features computed once, base unchanged, the same head as one worker', async () => {
    // A cache of its own, so that worker 0 computes the features here (the other tests filled the shared one).
    const cache = path.join(dir, 'cache-parallel')
    process.env.ML_CACHE_DIR = cache
    try {
      const model = {base: {source: 'base'}, head: {hidden: [8], dropout: 0.2}}
      const train = {epochs: 2, batchSize: 12, learningRate: 0.02}
      let notes: string[] = []
      const two = await runTraining({loaded: await loadConfig(await writeConfig('parallel-2', model, {...train, devices: 2})), runId: 'parallel-2', onEvent: (e) => e.type === 'start' && (notes = e.notes)})
      assert.equal(two.workers, 2)
      assert.ok(notes.some((n) => /^Base features .* computed once with onnxruntime/.test(n)), `notes: ${notes.join(' | ')}`)
      assert.ok(notes.some((n) => /^worker 1: Base features .* from the cache/.test(n)), `worker 1 computed the features again: ${notes.join(' | ')}`)
      assert.equal((await readdir(path.join(cache, 'features'))).length, 1)
      const one = await runTraining({loaded: await loadConfig(await writeConfig('parallel-1', model, {...train, devices: 1})), runId: 'parallel-1'})
      const diff = maxAbsDiff(await weightsOf(one.runDir), await weightsOf(two.runDir))
      assert.ok(diff < 1e-5, `2 workers differ from 1 by ${diff}`)
      const saved = await loadModel(path.join(two.runDir, 'model'))
      for (const name of BASE_LAYERS) assert.equal(maxAbsDiff(layerWeights(saved, name), layerWeights(reference, name)), 0, `frozen layer ${name} changed`)
      const initial = await loadBase(BaseSchema.parse({source: path.join(dir, 'base')}), {width: 16, height: 16, channels: 3, fit: 'fill'})
      const fresh = buildTransferModel(initial, HeadSchema.parse(model.head), 3, 3)
      assert.ok(maxAbsDiff(layerWeights(saved, 'head_dense_1'), layerWeights(fresh.model, 'head_dense_1')) > 1e-4, 'the head did not train')
      for (const m of [saved, fresh.model]) m.dispose()
    } finally {
      process.env.ML_CACHE_DIR = path.join(dir, 'cache')
    }
  })

  it('refuses train.fineTune without model.base', async () => {
    const config = await writeConfig('no-base', {preset: 'mlp'}, {fineTune: {epochs: 1, unfreeze: 1}})
    await assert.rejects(runTraining({loaded: await loadConfig(config), runId: 'no-base'}), (e) => e instanceof UserError && e.code === 'CONFIG_INVALID' && /model\.base/.test(e.message))
  })
})
