// `ml evaluate` on anything: a run's own test split, a folder of class sub-folders, another dataset
// store whose class order differs from the model's (matched by name), an exported version by folder,
// model.onnx file or name@alias; bad files skipped and named, unknown classes refused.
import assert from 'node:assert/strict'
import {copyFile, mkdir, readdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {stringify} from 'yaml'
import {runCli, runJson} from '../../support/cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'

type Evaluated = {
  accuracy: number
  loss: number
  count: number
  confusionMatrix: number[][]
  perClass: Array<{label: string; support: number}>
  model: {source: string; name: string; dir: string}
  data: {kind: string; location: string; split?: string}
  skipped: Array<{file: string; error: string}>
  imagesPerSec: number
  runId?: string
}

describe('ml evaluate on any labelled data and any model', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let config: string
  let own: Evaluated

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-evaluate-any-'))
    await mnistFolders(dir, 300, 40)
    config = await writeMnistConfig(dir, {train: {epochs: 1}})
    for (const command of ['ingest', 'train', 'export']) {
      const r = await runJson([command, '--config', config])
      assert.equal(r.code, 0, r.stderr)
    }
    const r = await runJson<Evaluated>(['evaluate', '--config', config])
    assert.equal(r.code, 0, r.stderr)
    own = r.json
  })
  after(() => cleanup())

  it('scores a run on its own test split, naming run, model and data', () => {
    assert.equal(own.count, 40)
    assert.match(own.runId!, /^digits-/)
    assert.equal(own.model.source, 'latest-run')
    assert.deepEqual([own.data.kind, own.data.split], ['store', 'test'])
    assert.equal(own.confusionMatrix.flat().reduce((a, b) => a + b, 0), 40)
  })

  it('scores an exported version on a folder of class sub-folders with the same results as on the store', async () => {
    const r = await runJson<Evaluated>(['evaluate', '--model', path.join(dir, 'models', 'digits', '1'), '--data', path.join(dir, 'data', 'test'), '--config', config])
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual([r.json.model.source, r.json.model.name, r.json.data.kind], ['model', 'digits version 1', 'folder'])
    assert.equal(r.json.count, 40)
    assert.deepEqual(r.json.confusionMatrix, own.confusionMatrix)
    assert.equal(r.json.accuracy, own.accuracy)
    assert.ok(r.json.imagesPerSec > 0)
  })

  it('matches classes by name: a store whose class order differs from the model\'s scores the same', async () => {
    // Two ingests: the 9s first, so that the store's class 0 is "9".
    const other = path.join(dir, 'other.yaml')
    const base = {name: 'digits', image: {width: 28, height: 28, channels: 1}, split: {validation: 0, test: 0, seed: 0}, store: 'other-store'}
    const write = (sources: object[]) => writeFile(other, stringify({name: 'digits', data: {...base, name: undefined, sources}, model: {preset: 'mlp'}, train: {backend: 'wasm', runs: 'runs'}, export: {dir: 'models'}}))
    await write([{type: 'folder', path: 'data/test/9', label: '9', split: 'test'}])
    assert.equal((await runJson(['ingest', '--config', other])).code, 0)
    await write([{type: 'folder', path: 'data/test', split: 'test'}])
    assert.equal((await runJson(['ingest', '--config', other])).code, 0)
    const manifest = JSON.parse(await readFile(path.join(dir, 'other-store', 'manifest.json'), 'utf8')) as {classes: string[]}
    const modelLabels = own.perClass.map((c) => c.label)
    assert.equal(manifest.classes[0], '9')
    assert.notDeepEqual(manifest.classes, modelLabels)
    for (const c of manifest.classes) assert.ok(modelLabels.includes(c), c)
    const r = await runJson<Evaluated>(['evaluate', '--data', path.join(dir, 'other-store'), '--config', config])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.json.count, 40)
    assert.deepEqual(r.json.perClass.map((c) => c.label), modelLabels)
    assert.deepEqual(r.json.confusionMatrix, own.confusionMatrix)
    assert.equal(r.json.accuracy, own.accuracy)
  })

  it('takes a model.onnx file and name@alias; prints tables for people', async () => {
    const onnx = await runJson<Evaluated>(['evaluate', '--model', path.join(dir, 'models', 'digits', '1', 'model.onnx'), '--config', config])
    assert.equal(onnx.code, 0, onnx.stderr)
    assert.deepEqual(onnx.json.confusionMatrix, own.confusionMatrix)
    assert.equal((await runJson(['models', 'alias', '1', 'production', '--config', config])).code, 0)
    const human = await runCli(['evaluate', '--model', 'digits@production', '--config', config])
    assert.equal(human.code, 0, human.stderr)
    assert.match(human.stdout, /^digits version 1 \(digits@production\) on .*dataset \(test\), 40 images: accuracy /)
    assert.match(human.stdout, /^class +precision +recall +f1 +support$/m)
    const zeroRow = human.stdout.split('\n').find((l) => /^0 {2,}\d/.test(l) && l.trim().split(/\s+/).length === 11)
    assert.ok(zeroRow, human.stdout)
    assert.deepEqual(zeroRow.trim().split(/\s+/).slice(1).map(Number), own.confusionMatrix[0])
  })

  it('leaves out and names an undecodable file of a folder; refuses a class the model does not know', async () => {
    const folder = path.join(dir, 'labelled')
    for (const label of ['3', '4']) {
      await mkdir(path.join(folder, label), {recursive: true})
      for (const f of await readdir(path.join(dir, 'data', 'test', label))) await copyFile(path.join(dir, 'data', 'test', label, f), path.join(folder, label, f))
    }
    await writeFile(path.join(folder, '3', 'broken.png'), 'not a png')
    const r = await runJson<Evaluated>(['evaluate', '--data', folder, '--config', config])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.json.count, own.perClass[3]!.support + own.perClass[4]!.support)
    assert.deepEqual(r.json.skipped.map((s) => s.file), [path.join(folder, '3', 'broken.png')])
    await mkdir(path.join(folder, 'cat'), {recursive: true})
    await copyFile(path.join(folder, '4', (await readdir(path.join(folder, '4')))[0]!), path.join(folder, 'cat', 'x.png'))
    const unknown = await runJson<{error: {code: string; message: string}}>(['evaluate', '--data', folder, '--config', config])
    assert.equal(unknown.code, 3)
    assert.equal(unknown.json.error.code, 'CLASSES_UNKNOWN')
    assert.match(unknown.json.error.message, /"cat"/)
    const split = await runJson<{error: {code: string}}>(['evaluate', '--data', path.join(dir, 'data', 'test', '3'), '--split', 'validation', '--config', config])
    assert.deepEqual([split.code, split.json.error.code], [2, 'EVALUATE_NO_SPLIT'])
  })
})
