import assert from 'node:assert/strict'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {mnistFolders, tempDir, writeMnistConfig} from '../support/fixtures.js'
import {runCli, runJson, startCli} from '../support/cli.js'

describe('ml CLI end to end (real MNIST digits)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let config: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-cli-'))
    await mnistFolders(dir, 800, 200)
    const png = await readFile(path.join(dir, 'data', 'train', '3', 'train-00007.png'))
    // Bad files among good ones: they must be quarantined, not stop the run.
    await writeFile(path.join(dir, 'data', 'train', '3', 'truncated.png'), png.subarray(0, Math.floor(png.length / 2)))
    await writeFile(path.join(dir, 'data', 'train', '3', 'empty.png'), Buffer.alloc(0))
    await writeFile(path.join(dir, 'data', 'train', '4', 'notes.png'), 'this is text, not an image\n')
    await writeFile(path.join(dir, 'data', 'train', '4', 'copy-of-a-3.png'), png)
    config = await writeMnistConfig(dir, {model: {preset: 'mlp'}, train: {epochs: 2, batchSize: 32}})
  })
  after(() => cleanup())

  it('config validate lists problems with their paths and exits 2', async () => {
    const bad = path.join(dir, 'bad.yaml')
    await writeFile(bad, 'data:\n  sources: [{type: folder, path: x}]\ntrain:\n  batchSize: abc\n  epoch: 3\n')
    const {code, json} = await runJson<{error: {code: string; details: {issues: Array<{path: string; message: string}>}}}>(['config', 'validate', '--config', bad])
    assert.equal(code, 2)
    assert.equal(json.error.code, 'CONFIG_INVALID')
    assert.deepEqual(json.error.details.issues, [
      {path: 'train.batchSize', message: 'expected a positive integer, got "abc"'},
      {path: 'train.epoch', message: 'unknown key (did you mean `train.epochs`?)'},
    ])
    const human = await runCli(['config', 'validate', '--config', bad])
    assert.equal(human.code, 2)
    assert.match(human.stderr, /train\.batchSize: expected a positive integer, got "abc"/)
    assert.doesNotMatch(human.stderr, /at .*\.js:\d+/, 'a user error must not print a stack trace')
  })

  it('ingest quarantines bad files, drops duplicates and prints one JSON summary', async () => {
    const {code, json} = await runJson<Record<string, number>>(['ingest', '--config', config])
    assert.equal(code, 0)
    assert.equal(json.accepted, 1000)
    assert.equal(json.duplicates, 1)
    assert.equal(json.rejected, 3)
    assert.equal(json.classes, 10)
    assert.ok(json.shards >= 3)
    const again = await runJson<Record<string, number>>(['ingest', '--config', config])
    assert.equal(again.json.accepted, 0, 're-ingesting the same images must add nothing')
    assert.equal(again.json.datasetVersion, json.datasetVersion)
  })

  it('trains, evaluates, exports and predicts', async () => {
    const train = await runJson<{runId: string; backend: string; epochs: number; accuracy: number; valAccuracy: number; runDir: string}>(['train', '--config', config, '--run-id', 'cli-run'])
    assert.equal(train.code, 0, train.stderr)
    assert.equal(train.json.runId, 'cli-run')
    assert.equal(train.json.backend, 'wasm')
    assert.equal(train.json.epochs, 2)
    assert.ok(train.json.valAccuracy > 0.6, `val accuracy ${train.json.valAccuracy}`)

    const evaluation = await runJson<{accuracy: number; count: number; confusionMatrix: number[][]; perClass: unknown[]}>(['evaluate', '--config', config])
    assert.equal(evaluation.code, 0, evaluation.stderr)
    assert.equal(evaluation.json.count, 200)
    assert.ok(evaluation.json.accuracy > 0.6, `test accuracy ${evaluation.json.accuracy}`)
    assert.equal(evaluation.json.perClass.length, 10)
    assert.equal(evaluation.json.confusionMatrix.flat().reduce((a, b) => a + b, 0), 200)

    const exported = await runJson<{version: number; dir: string; unchanged: boolean}>(['export', '--config', config])
    assert.equal(exported.code, 0, exported.stderr)
    assert.equal(exported.json.version, 1)
    const card = JSON.parse(await readFile(path.join(exported.json.dir, 'model-card.json'), 'utf8'))
    assert.equal(card.metrics.test.accuracy, evaluation.json.accuracy)
    const again = await runJson<{version: number; unchanged: boolean}>(['export', '--config', config])
    assert.equal(again.json.version, 1)
    assert.equal(again.json.unchanged, true)

    const digits = ['0', '1', '7'].map((d) => path.join(dir, 'data', 'test', d))
    const {readdir} = await import('node:fs/promises')
    const files = await Promise.all(digits.map(async (d) => path.join(d, (await readdir(d)).sort()[0]!)))
    const predicted = await runJson<{predictions: Array<{file: string; top: Array<{label: string; score: number}>}>}>(['predict', ...files, '--top-k', '3', '--config', config])
    assert.equal(predicted.code, 0, predicted.stderr)
    assert.equal(predicted.json.predictions.length, 3)
    for (const p of predicted.json.predictions) {
      assert.equal(p.top.length, 3)
      assert.ok(p.top[0]!.score >= p.top[1]!.score)
    }
    const right = predicted.json.predictions.filter((p, i) => p.top[0]!.label === ['0', '1', '7'][i]).length
    assert.ok(right >= 2, `only ${right} of 3 easy digits classified right`)

    const withBad = await runJson<{error: {code: string; details: {predictions: unknown[]; failed: Array<{file: string}>}}}>(['predict', files[0]!, path.join(dir, 'missing.png'), '--config', config])
    assert.equal(withBad.code, 3)
    assert.equal(withBad.json.error.code, 'PREDICT_FAILED')
    assert.equal(withBad.json.error.details.predictions.length, 1)
    assert.match(withBad.json.error.details.failed[0]!.file, /missing\.png$/)
  })

  for (const devices of [1, 2]) {
    it(`a run killed with SIGKILL mid-training resumes to the same weights as an uninterrupted one (${devices} worker${devices > 1 ? 's' : ''})`, async () => {
      const common = ['--config', config, '--epochs', '3', '--devices', String(devices)]
      const straight = await runJson<{runDir: string}>(['train', ...common, '--run-id', `straight-${devices}`])
      assert.equal(straight.code, 0, straight.stderr)
      const killed = startCli(['train', ...common, '--run-id', `killed-${devices}`])
      let seen = ''
      await new Promise<void>((resolve) => {
        killed.child.stderr!.on('data', (d: Buffer) => {
          seen += d.toString()
          // The first epoch is checkpointed: kill during the second.
          if (/epoch 1\/3 /.test(seen)) {
            killed.child.kill('SIGKILL')
            resolve()
          }
        })
        killed.child.on('close', () => resolve())
      })
      const result = await killed.done
      assert.equal(result.signal, 'SIGKILL', `the run ended before it could be killed:\n${result.stderr}`)
      const resumed = await runJson<{runId: string; epochs: number; runDir: string}>(['train', ...common, '--resume', `killed-${devices}`])
      assert.equal(resumed.code, 0, resumed.stderr)
      assert.equal(resumed.json.runId, `killed-${devices}`)
      assert.equal(resumed.json.epochs, 3)
      const metrics = (await readFile(path.join(resumed.json.runDir, 'metrics.jsonl'), 'utf8')).trim().split('\n')
      assert.deepEqual(metrics.map((l) => JSON.parse(l).epoch), [1, 2, 3])
      const a = await readFile(path.join(straight.json.runDir, 'model', 'weights.bin'))
      const b = await readFile(path.join(resumed.json.runDir, 'model', 'weights.bin'))
      const x = new Float32Array(a.buffer, a.byteOffset, a.byteLength / 4)
      const y = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)
      assert.equal(x.length, y.length)
      let diff = 0
      for (let i = 0; i < x.length; i++) diff = Math.max(diff, Math.abs(x[i]! - y[i]!))
      assert.ok(diff <= 1e-5, `resumed weights differ from the uninterrupted run by ${diff}`)
    })
  }
})
