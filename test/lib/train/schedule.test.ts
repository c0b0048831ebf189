import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {loadConfig} from '../../../src/lib/config/load.js'
import {TrainSchema} from '../../../src/lib/config/schema.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {UserError} from '../../../src/lib/errors.js'
import {summarizeModel} from '../../../src/lib/model/summary.js'
import {balancedWeights, resolveClassWeights} from '../../../src/lib/train/class-weights.js'
import {learningRateAt, setLearningRate} from '../../../src/lib/train/schedule.js'
import {makeOptimizer} from '../../../src/lib/train/replica.js'
import {runTraining} from '../../../src/lib/train/trainer.js'
import {loadModel} from '../../../src/lib/model/artifact.js'
import {loadSplit, readManifest} from '../../../src/lib/data/store.js'
import {runJson} from '../../support/cli.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'
import {maxAbsDiff, weightsOf} from '../../support/weights.js'
import path from 'node:path'

before(async () => {
  await initEngine('wasm')
})

const train = (fields: object) => TrainSchema.parse({epochs: 10, learningRate: 0.1, ...fields})
const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-12 + 1e-9 * Math.abs(b), `${what}: ${a} != ${b}`)

describe('learning-rate schedules', () => {
  it('computes each schedule per step (10 epochs of 4 steps, base 0.1)', () => {
    const cases: Array<[object | undefined, Array<[number, number, number]>]> = [
      [undefined, [[0, 0, 0.1], [9, 3, 0.1]]],
      [{type: 'constant'}, [[5, 2, 0.1]]],
      [{type: 'step', stepEpochs: 3, gamma: 0.5}, [[0, 0, 0.1], [2, 3, 0.1], [3, 0, 0.05], [6, 1, 0.025], [9, 3, 0.0125]]],
      [{type: 'exponential', gamma: 0.5}, [[0, 0, 0.1], [1, 0, 0.05], [2, 2, 0.1 * 0.5 ** 2.5]]],
      [{type: 'cosine', minLearningRate: 0.01}, [[0, 0, 0.1], [5, 0, 0.055], [10, 0, 0.01]]],
      // Warm-up over 2 epochs (8 steps): 1/8, 2/8 ... 8/8 of the rate, then the schedule from there.
      [{type: 'cosine', warmupEpochs: 2}, [[0, 0, 0.0125], [0, 3, 0.05], [1, 3, 0.1], [2, 0, 0.1], [6, 0, 0.05]]],
      [{type: 'step', warmupEpochs: 1, stepEpochs: 2, gamma: 0.1}, [[0, 1, 0.05], [1, 0, 0.1], [3, 0, 0.01]]],
    ]
    for (const [schedule, points] of cases) {
      const config = train(schedule ? {schedule} : {})
      for (const [epoch, step, expected] of points) close(learningRateAt(config, epoch, step, 4), expected, `${JSON.stringify(schedule)} at epoch ${epoch} step ${step}`)
    }
  })

  it('sets the rate of every optimizer: one created at 0.01 and set to 0.05 updates like one created at 0.05', () => {
    for (const optimizer of ['adam', 'sgd', 'momentum', 'rmsprop', 'adagrad'] as const) {
      const results = [0.01, 0.05].map((initial) => {
        const v = tf.variable(tf.tensor1d([1, -2, 3]), true, `v-${optimizer}-${initial}`)
        const opt = makeOptimizer(train({optimizer, learningRate: initial}))
        setLearningRate(opt, 0.05)
        for (let i = 0; i < 3; i++) opt.applyGradients({[v.name]: tf.tensor1d([0.5, 0.25, -1])})
        const out = Array.from(v.dataSync())
        v.dispose()
        opt.dispose()
        return out
      })
      results[0]!.forEach((x, i) => assert.ok(Math.abs(x - results[1]![i]!) < 1e-6, `${optimizer}: ${results[0]} vs ${results[1]}`))
    }
  })
})

describe('class weights', () => {
  it('auto is n / (classes x count); names map to indices; unknown names are config errors', () => {
    assert.deepEqual(balancedWeights([10, 30, 0]).map((w) => Number(w.toFixed(4))), [1.3333, 0.4444, 1])
    assert.deepEqual(resolveClassWeights({cat: 3}, ['cat', 'dog'], [5, 5]), [3, 1])
    assert.deepEqual(resolveClassWeights([2, 0.5], ['cat', 'dog'], [5, 5]), [2, 0.5])
    assert.equal(resolveClassWeights(undefined, ['cat'], [1]), undefined)
    assert.throws(() => resolveClassWeights({cow: 2}, ['cat', 'dog'], [1, 1]), (e: unknown) => e instanceof UserError && e.code === 'CONFIG_INVALID' && /cow/.test(e.message))
  })
})

describe('model summary', () => {
  it('lists layers with output shapes and parameters, Keras style', () => {
    const s = summarizeModel({preset: 'mlp'}, {width: 28, height: 28, channels: 1, fit: 'fill'}, 10, 1)
    assert.deepEqual(
      s.layers.map((l) => [l.name, l.type, l.outputShape, l.params]),
      [
        ['image', 'InputLayer', [null, 28, 28, 1], 0],
        ['flatten_1', 'Flatten', [null, 784], 0],
        ['dense_2', 'Dense', [null, 128], 100_480],
        ['dropout_3', 'Dropout', [null, 128], 0],
        ['probabilities', 'Dense', [null, 10], 1290],
      ],
    )
    assert.equal(s.totalParams, 101_770)
    assert.equal(s.trainableParams, 101_770)
    assert.equal(s.nonTrainableParams, 0)
    assert.match(s.text, /Total params: 101770/)
    assert.match(s.text, /Layer \(type\)\s+Input Shape\s+Output shape\s+Param #/)
    assert.match(s.text, /dense_2 \(Dense\)\s+\[\[null,784\]\]\s+\[null,128\]\s+100480/)
  })
})

describe('training with a schedule and class weights', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let configFile: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-schedule-'))
    await mnistFolders(dir, 300, 0)
    configFile = await writeMnistConfig(dir, {data: {sources: [{type: 'folder', path: 'data/train'}]}, train: {epochs: 2, batchSize: 32, learningRate: 0.003}})
    const loaded = await loadConfig(configFile)
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  })
  after(() => cleanup())

  it('a step schedule is applied per step: decayed to ~0 after epoch 1, epoch 2 changes nothing', async () => {
    const decayed = await runTraining({loaded: await loadConfig(configFile, {'train.schedule': {type: 'step', stepEpochs: 1, gamma: 1e-9}}), runId: 'decayed'})
    const one = await runTraining({loaded: await loadConfig(configFile, {'train.epochs': 1}), runId: 'one-epoch'})
    const two = await runTraining({loaded: await loadConfig(configFile), runId: 'two-epochs'})
    const same = maxAbsDiff(await weightsOf(decayed.runDir), await weightsOf(one.runDir))
    const moved = maxAbsDiff(await weightsOf(two.runDir), await weightsOf(one.runDir))
    assert.ok(same < 1e-5, `epoch 2 at a rate of 3e-12 moved weights by ${same}`)
    assert.ok(moved > 1e-3, `epoch 2 at the full rate moved weights by only ${moved}`)
  })

  it('class weights shift predictions towards the heavy class, without leaking tensors', async () => {
    const predictedOnes = async (runDir: string) => {
      const store = path.join(dir, 'dataset')
      const split = await loadSplit(store, 'validation', await readManifest(store))
      const model = await loadModel(path.join(runDir, 'model'))
      const xs = tf.tensor4d(Float32Array.from(split.pixels, (p) => p / 255), [split.count, 28, 28, 1])
      const predicted = (model.predict(xs) as tf.Tensor).argMax(1).dataSync()
      tf.dispose([xs])
      model.dispose()
      return Array.from(predicted).filter((p) => p === 1).length
    }
    const counts: number[] = []
    const heavy = await runTraining({
      loaded: await loadConfig(configFile, {'train.classWeights': {'1': 20}}),
      runId: 'heavy-ones',
      onEvent: (e) => {
        if (e.type === 'step' && e.step >= 2) counts.push(tf.memory().numTensors)
      },
    })
    assert.equal(Math.max(...counts), Math.min(...counts), 'tensor count changed across steps')
    const plain = path.join(dir, 'runs', 'two-epochs')
    const [weighted, unweighted] = [await predictedOnes(heavy.runDir), await predictedOnes(plain)]
    assert.ok(weighted > unweighted, `weighting class 1 x20 should predict it more often: ${weighted} vs ${unweighted}`)
    await assert.rejects(runTraining({loaded: await loadConfig(configFile, {'train.classWeights': {seven: 2}}), runId: 'bad'}), (e: unknown) => e instanceof UserError && e.code === 'CONFIG_INVALID')
  })

  it('ml train --summary prints the model and trains nothing', async () => {
    const result = await runJson<{totalParams: number; layers: unknown[]}>(['train', '--summary', '--config', configFile])
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.json.totalParams, 101_770)
    assert.equal(result.json.layers.length, 5)
  })
})
