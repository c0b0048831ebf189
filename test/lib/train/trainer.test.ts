import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {runTraining, type TrainEvent} from '../../../src/lib/train/trainer.js'
import {UserError} from '../../../src/lib/errors.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'
import {maxAbsDiff, weightsOf} from '../../support/weights.js'

describe('training loop', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let configFile: string

  before(async () => {
    ;({dir, cleanup} = await tempDir())
    await mnistFolders(dir, 600, 100)
    // cnn-tiny has convolutions and dropout: it exercises the added wasm kernels and the seeded dropout.
    configFile = await writeMnistConfig(dir, {model: {preset: 'cnn-tiny'}, train: {epochs: 2, batchSize: 32, learningRate: 0.005}})
    const loaded = await loadConfig(configFile)
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  })
  after(() => cleanup())

  it('trains, logs metrics per epoch, checkpoints and leaks no tensors', async () => {
    const loaded = await loadConfig(configFile)
    const counts: number[] = []
    const summary = await runTraining({
      loaded,
      runId: 'plain',
      onEvent: (e) => {
        if (e.type === 'step' && e.step >= 2) counts.push(tf.memory().numTensors)
      },
    })
    assert.equal(summary.epochs, 2)
    assert.equal(summary.backend, 'wasm')
    assert.ok(summary.valAccuracy! > 0.5, `validation accuracy ${summary.valAccuracy} should beat chance by far`)
    const lines = (await readFile(path.join(summary.runDir, 'metrics.jsonl'), 'utf8')).trim().split('\n')
    assert.equal(lines.length, 2)
    assert.deepEqual(Object.keys(JSON.parse(lines[1]!)).sort(), ['accuracy', 'at', 'epoch', 'imagesPerSec', 'loss', 'seconds', 'valAccuracy', 'valLoss'])
    const run = JSON.parse(await readFile(path.join(summary.runDir, 'run.json'), 'utf8'))
    assert.equal(run.status, 'completed')
    assert.ok(counts.length > 10)
    assert.equal(Math.max(...counts), Math.min(...counts), `tensor count changed across steps: ${[...new Set(counts)].join(', ')}`)
  })

  it('is deterministic for a seed', async () => {
    const loaded = await loadConfig(configFile)
    const again = await runTraining({loaded, runId: 'plain-again'})
    const diff = maxAbsDiff(await weightsOf(path.join(dir, 'runs', 'plain')), await weightsOf(again.runDir))
    assert.ok(diff <= 1e-6, `same seed gave weights differing by ${diff}`)
  })

  it('resumes an interrupted run to the same weights as an uninterrupted one', async () => {
    const loaded = await loadConfig(configFile)
    const abort = new AbortController()
    await assert.rejects(
      runTraining({
        loaded,
        runId: 'interrupted',
        signal: abort.signal,
        onEvent: (e: TrainEvent) => {
          if (e.type === 'step' && e.epoch === 1 && e.step === 3) abort.abort()
        },
      }),
      (error: unknown) => error instanceof UserError && error.code === 'INTERRUPTED' && error.exitCode === 130,
    )
    const interrupted = JSON.parse(await readFile(path.join(dir, 'runs', 'interrupted', 'run.json'), 'utf8'))
    assert.equal(interrupted.status, 'interrupted')
    const resumed = await runTraining({loaded, resume: 'interrupted'})
    assert.equal(resumed.runId, 'interrupted')
    assert.equal(resumed.epochs, 2)
    const diff = maxAbsDiff(await weightsOf(path.join(dir, 'runs', 'plain')), await weightsOf(resumed.runDir))
    assert.ok(diff <= 1e-5, `resumed run differs from the uninterrupted one by ${diff}`)
  })

  it('refuses a dataset with a single class', async () => {
    const single = await tempDir()
    try {
      await mnistFolders(single.dir, 20, 0)
      const file = await writeMnistConfig(single.dir, {data: {sources: [{type: 'folder', path: 'data/train/1', label: 'one'}]}})
      const loaded = await loadConfig(file)
      await runIngest({config: loaded.config, baseDir: loaded.baseDir})
      await assert.rejects(runTraining({loaded}), (error: unknown) => error instanceof UserError && error.code === 'DATASET_TOO_SMALL')
    } finally {
      await single.cleanup()
    }
  })
})
