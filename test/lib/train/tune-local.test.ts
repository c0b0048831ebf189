import assert from 'node:assert/strict'
import {readFile, stat, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {parse, stringify} from 'yaml'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {UserError} from '../../../src/lib/errors.js'
import {halvingRungs, runLocalTuning, sampleParameter, type LocalStudy} from '../../../src/lib/train/tune-local.js'
import {rngFor} from '../../../src/lib/train/rng.js'
import {runJson} from '../../support/cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'

describe('local tuning: search', () => {
  it('successive halving rungs end at the full budget, each eta times longer', () => {
    assert.deepEqual(halvingRungs(9, 9, 3), [1, 3, 9])
    assert.deepEqual(halvingRungs(27, 10, 3), [1, 3, 10])
    assert.deepEqual(halvingRungs(3, 2, 3), [1, 2])
    assert.deepEqual(halvingRungs(2, 8, 3), [8])
    assert.deepEqual(halvingRungs(4, 8, 2), [2, 4, 8])
  })

  it('samples every parameter type inside its range, log scales evenly in the logarithm', () => {
    const rng = rngFor(1, 'sample')
    const logs = Array.from({length: 2000}, () => sampleParameter({name: 'train.learningRate', type: 'double', min: 0.0001, max: 0.1, scale: 'log'}, rng) as number)
    assert.ok(logs.every((v) => v >= 0.0001 && v <= 0.1))
    const belowGeometricMiddle = logs.filter((v) => v < Math.sqrt(0.0001 * 0.1)).length / logs.length
    assert.ok(Math.abs(belowGeometricMiddle - 0.5) < 0.05, `log-uniform: ${belowGeometricMiddle} below the geometric middle`)
    const ints = Array.from({length: 500}, () => sampleParameter({name: 'train.epochs', type: 'integer', min: 2, max: 4}, rng))
    assert.deepEqual([...new Set(ints)].sort(), [2, 3, 4])
    const cats = Array.from({length: 200}, () => sampleParameter({name: 'train.optimizer', type: 'categorical', values: ['adam', 'sgd']}, rng))
    assert.deepEqual([...new Set(cats)].sort(), ['adam', 'sgd'])
  })
})

describe('local tuning: ml tune --target local', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let configFile: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-tune-local-'))
    await mnistFolders(dir, 200, 0)
    configFile = await writeMnistConfig(dir, {data: {sources: [{type: 'folder', path: 'data/train'}]}, train: {epochs: 2, batchSize: 32}})
    const config = parse(await readFile(configFile, 'utf8')) as Record<string, unknown>
    config.tune = {
      metric: 'valAccuracy',
      maxTrials: 2,
      parallelTrials: 2,
      algorithm: 'halving',
      eta: 2,
      parameters: [
        {name: 'train.learningRate', type: 'double', min: 0.0005, max: 0.01, scale: 'log'},
        {name: 'train.batchSize', type: 'discrete', values: [16, 32]},
      ],
    }
    await writeFile(configFile, stringify(config))
    const loaded = await loadConfig(configFile)
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  })
  after(() => cleanup())

  it('halves 2 trials to 1 over rungs of 1 and 2 epochs, trials table as on Vertex, the best run marked', async () => {
    const result = await runJson<any>(['tune', '--target', 'local', '--config', configFile])
    assert.equal(result.code, 0, result.stderr)
    const json = result.json
    assert.equal(json.target, 'local')
    assert.deepEqual(json.rungs, [1, 2])
    assert.deepEqual(json.trials.map((t: {state: string}) => t.state).sort(), ['STOPPED', 'SUCCEEDED'])
    const winner = json.trials.find((t: {state: string}) => t.state === 'SUCCEEDED')
    assert.equal(winner.best, true)
    assert.equal(json.best.id, winner.id)
    // The survivor had the best rung-1 metric: every stopped trial scored no better.
    const study = JSON.parse(await readFile(json.studyFile, 'utf8')) as LocalStudy
    assert.equal(study.trials.find((t) => t.id === winner.id)!.epochs, 2)
    for (const t of study.trials.filter((x) => x.state === 'STOPPED')) assert.equal(t.epochs, 1)
    // Each trial is an ordinary run, with the trial's values in its config.
    const run = JSON.parse(await readFile(path.join(dir, 'runs', json.best.runId, 'config.json'), 'utf8'))
    assert.equal(run.train.learningRate, winner.parameters['train.learningRate'])
    assert.equal(run.train.batchSize, winner.parameters['train.batchSize'])
    const info = JSON.parse(await readFile(path.join(dir, 'runs', json.best.runId, 'run.json'), 'utf8'))
    assert.equal(info.final.valAccuracy, winner.metric)
  })

  it('continues an interrupted study: finished trials are not run again', async () => {
    const loaded = await loadConfig(configFile)
    const studyFile = path.join(dir, 'runs', '.tune', 'digits-tune.json')
    const study = JSON.parse(await readFile(studyFile, 'utf8')) as LocalStudy
    const winner = study.trials.find((t) => t.state === 'SUCCEEDED')!
    const stopped = study.trials.filter((t) => t.state === 'STOPPED')
    const before = await Promise.all(stopped.map((t) => stat(path.join(dir, 'runs', t.runId, 'run.json')).then((s) => s.mtimeMs)))
    // As if interrupted during the last rung.
    await writeFile(studyFile, JSON.stringify({...study, rung: 1, trials: study.trials.map((t) => (t.id === winner.id ? {...t, state: 'PENDING', epochs: 1, metric: undefined} : t))}))
    const result = await runLocalTuning(loaded)
    assert.equal(result.resumed, true)
    assert.equal(result.best?.id, winner.id)
    assert.equal(result.best?.metric, winner.metric)
    const after = await Promise.all(stopped.map((t) => stat(path.join(dir, 'runs', t.runId, 'run.json')).then((s) => s.mtimeMs)))
    assert.deepEqual(after, before)
    // Other settings than the study's are refused rather than mixed in.
    await assert.rejects(runLocalTuning(await loadConfig(configFile, {'tune.maxTrials': 5})), (e: unknown) => e instanceof UserError && e.code === 'TUNE_STUDY_CHANGED')
  })
})
