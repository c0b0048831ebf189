// `ml predict` over files and folders: recursive image discovery, batches decoded in the thread pool
// while the previous one runs (same answers as one image at a time), the model named, bad input named.
import assert from 'node:assert/strict'
import {mkdir, readdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {parse} from 'csv-parse/sync'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {collectInputs} from '../../../src/lib/predict/files.js'
import {predictFiles} from '../../../src/lib/predict/run.js'
import {Predictor} from '../../../src/lib/serve/predictor.js'
import {runJson, runCli} from '../../support/cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'

describe('ml predict (and ml evaluate) on the inference engine', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let config: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-predict-'))
    await mnistFolders(dir, 300, 40)
    config = await writeMnistConfig(dir, {train: {epochs: 1}})
    for (const command of ['ingest', 'train']) {
      const r = await runJson([command, '--config', config])
      assert.equal(r.code, 0, r.stderr)
    }
  })
  after(() => cleanup())

  it('collects the images under folders recursively, images only, in a stable order', async () => {
    const root = path.join(dir, 'mixed')
    await mkdir(path.join(root, 'a', 'deeper'), {recursive: true})
    const png = await readFile(path.join(dir, 'data', 'test', '3', (await readdir(path.join(dir, 'data', 'test', '3')))[0]!))
    await writeFile(path.join(root, 'a', 'deeper', 'x.PNG'), png)
    await writeFile(path.join(root, 'b.png'), png)
    await writeFile(path.join(root, 'notes.txt'), 'not an image')
    await writeFile(path.join(root, '.hidden.png'), png)
    await mkdir(path.join(dir, 'empty'), {recursive: true})
    const inputs = await collectInputs([root, path.join(dir, 'empty'), path.join(root, 'b.png'), path.join(dir, 'missing.png')])
    assert.deepEqual(inputs.files, [path.join(root, 'a', 'deeper', 'x.PNG'), path.join(root, 'b.png'), path.join(dir, 'missing.png')])
    assert.deepEqual(inputs.emptyFolders, [path.join(dir, 'empty')])
  })

  it('batched and overlapped, it gives the answers of one image at a time, in input order', async () => {
    await initEngine('wasm')
    const files = (await collectInputs([path.join(dir, 'data', 'test')])).files
    assert.equal(files.length, 40)
    const runDir = path.join(dir, 'runs')
    const latest = (await readFile(path.join(runDir, 'LATEST'), 'utf8')).trim()
    const predictor = await Predictor.load(path.join(runDir, latest, 'model'), {runtime: 'auto'})
    try {
      assert.equal(predictor.engine.runtime, 'onnx', predictor.engine.notes.join('; '))
      const seen: string[] = []
      const batched = await predictFiles({predictor, files: [...files, path.join(dir, 'nope.png')], topK: 2, batchSize: 7, onResult: (r) => void seen.push(r.file)})
      assert.deepEqual(seen, [...files, path.join(dir, 'nope.png')])
      assert.deepEqual(batched.failed.map((f) => f.error), [`${path.join(dir, 'nope.png')}: no such file`])
      assert.equal(batched.stats.images, 40)
      assert.ok(batched.stats.imagesPerSec > 0)
      for (const [i, file] of files.slice(0, 5).entries()) {
        const one = await predictFiles({predictor, files: [file], topK: 2, batchSize: 1})
        assert.deepEqual(one.predictions[0]!.top.map((t) => t.label), batched.predictions[i]!.top.map((t) => t.label))
        assert.ok(Math.abs(one.predictions[0]!.top[0]!.score - batched.predictions[i]!.top[0]!.score) < 1e-5)
      }
    } finally {
      predictor.dispose()
    }
  })

  it('the CLI takes a folder, names the model it used (the latest run when nothing is exported), and reports images/s', async () => {
    const folder = path.join(dir, 'data', 'test', '7')
    const r = await runJson<{model: {source: string; name: string; engine: string}; images: number; imagesPerSec: number; predictions: Array<{file: string}>}>(['predict', folder, '--config', config])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.json.model.source, 'latest-run')
    assert.match(r.json.model.name, /^run digits-.* \(latest run, not exported/)
    assert.equal(r.json.model.engine, 'onnxruntime (cpu)')
    assert.equal(r.json.images, (await readdir(folder)).length)
    assert.ok(r.json.imagesPerSec > 0)
    const human = await runCli(['predict', folder, '--config', config])
    assert.equal(human.code, 0, human.stderr)
    assert.match(human.stderr, /model: run digits-\S+ \(latest run, not exported.*on onnxruntime \(cpu\)/)
    assert.equal(human.stdout.trim().split('\n').length, (await readdir(folder)).length)
  })

  it('after an export, the export is used and named; a folder without images is a clear error, not EISDIR', async () => {
    assert.equal((await runJson(['export', '--config', config])).code, 0)
    const r = await runJson<{model: {source: string; name: string}}>(['predict', path.join(dir, 'data', 'test', '1'), '--config', config])
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual([r.json.model.source, r.json.model.name], ['export', 'digits version 1'])
    await mkdir(path.join(dir, 'nothing-here'), {recursive: true})
    const empty = await runJson<{error: {code: string; message: string}}>(['predict', path.join(dir, 'nothing-here'), '--config', config])
    assert.equal(empty.code, 2)
    assert.equal(empty.json.error.code, 'PREDICT_NO_IMAGES')
    assert.doesNotMatch(JSON.stringify(empty.json), /EISDIR/)
  })

  it('the CLI streams CSV rows for a CSV of paths: a missing or undecodable file is a row with its error, the rest classified, exit 3', async () => {
    const folder = path.join(dir, 'data', 'test', '4')
    const names = (await readdir(folder)).sort()
    await writeFile(path.join(dir, 'broken.png'), 'not a png')
    const csv = path.join(dir, 'batch.csv')
    await writeFile(csv, ['id,path', ...names.map((n, i) => `${i},data/test/4/${n}`), 'x,missing.png', 'y,broken.png'].join('\n') + '\n')
    const out = path.join(dir, 'out.csv')
    const r = await runJson<{error: {code: string; details: {images: number; failedCount: number; rows: number; output: string}}}>(['predict', '--csv', csv, '--output', out, '--top-k', '2', '--batch-size', '3', '--config', config])
    assert.equal(r.code, 3, r.stderr)
    assert.equal(r.json.error.code, 'PREDICT_FAILED')
    assert.deepEqual([r.json.error.details.images, r.json.error.details.failedCount, r.json.error.details.rows], [names.length, 2, names.length + 2])
    const rows = parse(await readFile(out, 'utf8'), {columns: true}) as Array<Record<string, string>>
    assert.deepEqual(rows.map((row) => row.file), [...names.map((n) => path.join(dir, 'data', 'test', '4', n)), path.join(dir, 'missing.png'), path.join(dir, 'broken.png')])
    for (const row of rows.slice(0, names.length)) assert.ok(row.label !== '' && row.label_2 !== '' && Number(row.score) >= Number(row.score_2) && row.error === '', JSON.stringify(row))
    assert.match(rows.at(-2)!.error!, /missing\.png: no such file/)
    assert.match(rows.at(-1)!.error!, /broken\.png: /)
  })

  it('the CLI expands a quoted glob and streams JSON Lines to stdout; --json with rows to stdout is refused', async () => {
    const pattern = path.join(dir, 'data', 'test', '[56]', '*.png')
    const expected = [...(await readdir(path.join(dir, 'data', 'test', '5'))).map((n) => path.join(dir, 'data', 'test', '5', n)).sort(), ...(await readdir(path.join(dir, 'data', 'test', '6'))).map((n) => path.join(dir, 'data', 'test', '6', n)).sort()]
    const r = await runCli(['predict', pattern, '--format', 'jsonl', '--config', config])
    assert.equal(r.code, 0, r.stderr)
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as {file: string; label: string; score: number})
    assert.deepEqual(lines.map((l) => l.file), expected)
    for (const l of lines) assert.ok(typeof l.label === 'string' && l.score > 0 && l.score <= 1)
    const refused = await runJson<{error: {code: string}}>(['predict', pattern, '--format', 'jsonl', '--config', config])
    assert.deepEqual([refused.code, refused.json.error.code], [2, 'PREDICT_FORMAT'])
  })

  it('ml evaluate runs on ONNX Runtime with the accuracy of TensorFlow.js, and reports images/s', async () => {
    type Evaluated = {accuracy: number; loss: number; count: number; engine: string; imagesPerSec: number; inferenceImagesPerSec: number}
    const onnx = await runJson<Evaluated>(['evaluate', '--config', config])
    const tfjs = await runJson<Evaluated>(['evaluate', '--config', config, '--engine', 'tfjs'])
    assert.equal(onnx.code, 0, onnx.stderr)
    assert.equal(tfjs.code, 0, tfjs.stderr)
    assert.equal(onnx.json.engine, 'onnxruntime (cpu)')
    assert.equal(tfjs.json.engine, 'tfjs (wasm)')
    assert.equal(onnx.json.count, 40)
    assert.equal(onnx.json.accuracy, tfjs.json.accuracy)
    assert.ok(Math.abs(onnx.json.loss - tfjs.json.loss) < 1e-4, `${onnx.json.loss} vs ${tfjs.json.loss}`)
    for (const r of [onnx.json, tfjs.json]) assert.ok(r.imagesPerSec > 0 && r.inferenceImagesPerSec >= r.imagesPerSec, JSON.stringify(r))
  })

  it('without onnxruntime-node, predict runs on TensorFlow.js and says so once', async () => {
    const r = await runCli(['predict', path.join(dir, 'data', 'test', '2'), '--config', config], {env: {...process.env, ML_DISABLE_ONNXRUNTIME: '1'}})
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stderr, /on tfjs \(wasm\)/)
    assert.equal(r.stderr.match(/onnxruntime-node is disabled/g)?.length, 1, r.stderr)
  })
})
