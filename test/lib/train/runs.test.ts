import assert from 'node:assert/strict'
import {mkdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import sharp from 'sharp'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {UserError} from '../../../src/lib/errors.js'
import {runTraining} from '../../../src/lib/train/trainer.js'
import {compareRuns, configDifferences, listRuns, removeRuns, runsTable, showRun} from '../../../src/lib/train/runs.js'
import {runJson} from '../../support/cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'
import {maxAbsDiff, weightsOf} from '../../support/weights.js'

describe('runs: restoreBest, list, show, compare, rm', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let runsDir: string
  let configFile: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-runs-'))
    await mnistFolders(dir, 300, 50)
    // A learning rate this high on 270 images overfits and oscillates: the best validation loss comes
    // before the last epoch, so restoreBest has something to restore.
    configFile = await writeMnistConfig(dir, {train: {epochs: 4, batchSize: 32, learningRate: 0.02, earlyStopping: {patience: 5, monitor: 'valLoss', restoreBest: true}}})
    const loaded = await loadConfig(configFile)
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
    runsDir = path.join(dir, 'runs')
  })
  after(() => cleanup())

  it('restoreBest keeps the best epoch: the weights of a run stopped at that epoch, recorded in run.json', async () => {
    const summary = await runTraining({loaded: await loadConfig(configFile), runId: 'best'})
    const metrics = (await readFile(path.join(summary.runDir, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as {epoch: number; valLoss: number; valAccuracy: number})
    const best = metrics.reduce((a, b) => (b.valLoss < a.valLoss ? b : a))
    const info = JSON.parse(await readFile(path.join(summary.runDir, 'run.json'), 'utf8'))
    assert.equal(metrics.length, 4)
    assert.ok(best.epoch < 4, `the fixture should make an earlier epoch best; valLoss per epoch: ${metrics.map((m) => m.valLoss.toFixed(4)).join(', ')}`)
    assert.deepEqual(info.kept, {epoch: best.epoch, restored: true, monitor: 'valLoss'})
    assert.equal(summary.keptEpoch, best.epoch)
    assert.equal(info.final.valAccuracy, best.valAccuracy)
    // The same seed stopped after the best epoch trains exactly the weights that were restored.
    const short = await runTraining({loaded: await loadConfig(configFile, {'train.epochs': best.epoch}), runId: 'short'})
    const diff = maxAbsDiff(await weightsOf(summary.runDir), await weightsOf(short.runDir))
    assert.ok(diff <= 1e-6, `restored weights differ from epoch ${best.epoch}'s by ${diff}`)
    assert.equal(JSON.parse(await readFile(path.join(short.runDir, 'run.json'), 'utf8')).kept.restored, false)
  })

  it('lists runs with their model, epochs, accuracy, backend and dataset version, the latest marked', async () => {
    await mkdir(path.join(runsDir, 'broken'))
    await writeFile(path.join(runsDir, 'broken', 'run.json'), '{"runId": ')
    const rows = await listRuns(runsDir)
    assert.deepEqual(rows.map((r) => r.id).sort(), ['best', 'broken', 'short'])
    const best = rows.find((r) => r.id === 'best')!
    assert.equal(best.model, 'mlp')
    assert.equal(best.epochs, 4)
    assert.equal(best.backend, 'wasm')
    assert.equal(best.datasetVersion, 1)
    assert.equal(best.status, 'completed')
    assert.ok(best.keptEpoch! >= 1)
    assert.ok(best.valAccuracy! > 0.3)
    assert.equal(rows.find((r) => r.id === 'broken')!.status, 'unreadable')
    assert.equal(rows.find((r) => r.id === 'short')!.latest, true)
    const table = runsTable(rows)
    assert.match(table.split('\n')[0]!, /^id\s+date\s+model\s+epochs\s+val_acc\s+test_acc\s+backend\s+dataset\s+status$/)
    assert.match(table, /short \*/)
    assert.match(table, new RegExp(`best\\s.*mlp\\s+4 \\(kept ${best.keptEpoch}\\)`))
  })

  it('shows a run; an unknown run is a usage error naming it', async () => {
    const details = await showRun(runsDir, 'best')
    assert.equal(details.info.runId, 'best')
    assert.equal(details.metrics.length, 4)
    assert.equal(details.config?.train.learningRate, 0.02)
    await assert.rejects(showRun(runsDir, 'nope'), (e: unknown) => e instanceof UserError && e.code === 'RUN_NOT_FOUND' && /nope/.test(e.message))
  })

  it('compares runs: metrics, config differences, and a PNG of both runs on shared axes', async () => {
    const png = path.join(dir, 'compare.png')
    const c = await compareRuns(runsDir, ['best', 'short'], {png})
    assert.deepEqual(c.runs.map((r) => r.id), ['best', 'short'])
    assert.deepEqual(c.differences.map((d) => d.key), ['train.epochs'])
    assert.deepEqual(c.differences.find((d) => d.key === 'train.epochs')!.values, [4, c.runs[1]!.epochs])
    const meta = await sharp(png).metadata()
    assert.equal(meta.format, 'png')
    assert.equal(meta.width, 1100)
    await assert.rejects(compareRuns(runsDir, ['best']), (e: unknown) => e instanceof UserError && e.code === 'USAGE')
  })

  it('config differences list only the keys whose values differ, absent keys included', () => {
    assert.deepEqual(configDifferences([{a: 1, b: {c: [1, 2], d: 'x'}}, {a: 1, b: {c: [1, 3]}, e: true}]), [
      {key: 'b.c', values: [[1, 2], [1, 3]]},
      {key: 'b.d', values: ['x', undefined]},
      {key: 'e', values: [undefined, true]},
    ])
  })

  it('the CLI lists and compares runs as one JSON object each', async () => {
    const list = await runJson<{runs: Array<{id: string}>}>(['runs', 'list', '--config', configFile])
    assert.equal(list.code, 0, list.stderr)
    assert.deepEqual(list.json.runs.map((r) => r.id).sort(), ['best', 'broken', 'short'])
    const compare = await runJson<{png: string; runs: unknown[]}>(['runs', 'compare', 'best', 'short', '--config', configFile])
    assert.equal(compare.code, 0, compare.stderr)
    assert.equal(compare.json.png, path.join(runsDir, 'compare.png'))
    const missing = await runJson<{error: {code: string}}>(['runs', 'rm', 'best', 'nope', '--config', configFile])
    assert.equal(missing.code, 3)
    assert.equal(missing.json.error.code, 'RUN_NOT_FOUND')
    assert.equal((await listRuns(runsDir)).length, 3, 'a failed rm deletes nothing')
  })

  it('removes runs; the latest pointer moves to the newest run left; a running run needs --force', async () => {
    const result = await removeRuns(runsDir, ['short', 'broken'])
    assert.deepEqual(result, {removed: ['short', 'broken'], latest: 'best'})
    assert.deepEqual((await listRuns(runsDir)).map((r) => [r.id, r.latest]), [['best', true]])
    const info = JSON.parse(await readFile(path.join(runsDir, 'best', 'run.json'), 'utf8'))
    await writeFile(path.join(runsDir, 'best', 'run.json'), JSON.stringify({...info, status: 'running'}))
    await assert.rejects(removeRuns(runsDir, ['best']), (e: unknown) => e instanceof UserError && e.code === 'RUN_RUNNING')
    assert.deepEqual(await removeRuns(runsDir, ['best'], {force: true}), {removed: ['best']})
    assert.deepEqual(await listRuns(runsDir), [])
  })
})
