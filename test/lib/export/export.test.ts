// `ml export` end to end on a small model trained on real MNIST: formats composed in one version,
// the model card, reproducible re-exports, quantization with measured accuracy, and the CLI.
import assert from 'node:assert/strict'
import {createHash} from 'node:crypto'
import {readdir, readFile, stat} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {parseFormats, runExport, type ExportResult} from '../../../src/lib/export/index.js'
import {readOnnxInfo} from '../../../src/lib/export/onnx.js'
import {Predictor} from '../../../src/lib/serve/predictor.js'
import {loadModel} from '../../../src/lib/model/artifact.js'
import {runTraining} from '../../../src/lib/train/trainer.js'
import {UserError} from '../../../src/lib/errors.js'
import {runJson} from '../../support/cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const entry of await readdir(dir, {recursive: true, withFileTypes: true})) {
    if (!entry.isFile()) continue
    const file = path.join(entry.parentPath, entry.name)
    out[path.relative(dir, file)] = sha256(await readFile(file))
  }
  return out
}

describe('ml export (small model trained on real MNIST)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let configFile: string
  let first: ExportResult

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-export-'))
    await mnistFolders(dir, 600, 200)
    configFile = await writeMnistConfig(dir, {model: {preset: 'cnn-tiny'}, train: {epochs: 1, batchSize: 32, learningRate: 0.005}})
    const loaded = await loadConfig(configFile)
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
    await runTraining({loaded, runId: 'run-1'})
  })
  after(() => cleanup())

  it('writes tfjs, onnx and triton into one version folder with a model card', async () => {
    const loaded = await loadConfig(configFile)
    loaded.config.export.triton.maxBatchSize = 16
    first = await runExport({loaded, formats: ['tfjs', 'onnx', 'triton']})
    assert.equal(first.version, 1)
    assert.equal(first.unchanged, false)
    const repo = path.join(dir, 'models', 'digits')
    assert.deepEqual((await readdir(repo)).sort(), ['1', 'config.pbtxt', 'labels.txt'], 'no staging folder may be left behind')
    assert.deepEqual((await readdir(first.dir)).sort(), ['MODEL_CARD.md', 'labels.json', 'model-card.json', 'model.json', 'model.onnx', 'preprocessing.json', 'weights.bin'])
    assert.equal(await readFile(path.join(repo, 'labels.txt'), 'utf8'), '0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n')
    assert.match(await readFile(path.join(repo, 'config.pbtxt'), 'utf8'), /max_batch_size: 16\n/)

    assert.deepEqual(first.formats.map((f) => f.format), ['tfjs', 'onnx', 'triton'])
    const [tfjs, onnx, triton] = first.formats
    assert.deepEqual(tfjs!.files, ['model.json', 'weights.bin'])
    assert.deepEqual(onnx!.files, ['model.onnx'])
    assert.deepEqual(triton!.files, ['model.onnx', '../config.pbtxt', '../labels.txt'])
    assert.equal(onnx!.bytes, (await stat(path.join(first.dir, 'model.onnx'))).size)
    assert.equal(first.evaluation.count, 200)
    assert.ok(first.evaluation.accuracy! > 0.5, `test accuracy ${first.evaluation.accuracy}`)
    for (const f of first.formats) {
      assert.equal(f.quantization, 'none')
      assert.equal(f.unquantizedBytes, f.bytes)
      assert.equal(f.accuracy, first.evaluation.accuracy, `${f.format}: the unquantized export must classify like the run's model`)
      assert.equal(f.accuracyDelta, 0)
      assert.ok(f.maxAbsDiff! <= 1e-4, `${f.format}: max difference ${f.maxAbsDiff}`)
    }

    const info = readOnnxInfo(await readFile(path.join(first.dir, 'model.onnx')))
    assert.deepEqual(info.input, {name: 'image', dims: ['batch', 28, 28, 1]})
    assert.deepEqual(JSON.parse(info.metadata.labels!), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
    assert.equal(JSON.parse(info.metadata.preprocessing!).scale, 1 / 255)

    const card = JSON.parse(await readFile(path.join(first.dir, 'model-card.json'), 'utf8'))
    assert.equal(card.runId, 'run-1')
    assert.deepEqual(card.input.shape, [null, 28, 28, 1])
    assert.equal(card.input.layout, 'NHWC')
    assert.equal(card.input.scale, 1 / 255)
    assert.equal(card.labels.length, 10)
    assert.match(card.dataset.fingerprint, /^[0-9a-f]{64}$/)
    assert.equal(card.training.config.model.preset, 'cnn-tiny')
    assert.equal(card.training.backend, 'wasm')
    assert.ok(card.metrics.train.accuracy > 0)
    assert.ok(card.metrics.validation.accuracy > 0)
    assert.equal(card.metrics.test.accuracy, first.evaluation.accuracy)
    const run = JSON.parse(await readFile(path.join(dir, 'runs', 'run-1', 'run.json'), 'utf8'))
    assert.equal(card.trainedAt, run.updatedAt, 'dates come from the run')
    assert.equal(card.toolkit.name, 'ml')
    assert.equal(card.quantization.mode, 'none')
    for (const format of card.formats) {
      for (const file of format.files) {
        const bytes = await readFile(path.join(first.dir, file.path))
        assert.equal(file.sha256, sha256(bytes), `${format.format} ${file.path}`)
        assert.equal(file.bytes, bytes.byteLength)
      }
    }
    const markdown = await readFile(path.join(first.dir, 'MODEL_CARD.md'), 'utf8')
    assert.match(markdown, /\| triton \| `model.onnx`, `..\/config.pbtxt`, `..\/labels.txt` \|/)
  })

  it('re-exporting the run writes nothing, and another repository gets the same bytes', async () => {
    const loaded = await loadConfig(configFile)
    loaded.config.export.triton.maxBatchSize = 16
    const before = await tree(path.join(dir, 'models'))
    const again = await runExport({loaded, formats: ['tfjs', 'onnx', 'triton']})
    assert.equal(again.version, 1)
    assert.equal(again.unchanged, true)
    assert.deepEqual(await tree(path.join(dir, 'models')), before)
    const other = await runExport({loaded, formats: ['tfjs', 'onnx', 'triton'], dir: path.join(dir, 'elsewhere')})
    assert.equal(other.version, 1)
    assert.deepEqual(await tree(path.join(dir, 'elsewhere')), before, 'an export is a function of the run: no clock, no paths')
  })

  it('uint8 and float16: smaller files, accuracy measured, and the quantized tfjs model loads', async () => {
    const loaded = await loadConfig(configFile)
    const results: Record<string, ExportResult> = {}
    for (const quantize of ['uint8', 'float16'] as const) {
      const r = await runExport({loaded, formats: ['tfjs', 'onnx'], quantize, dir: path.join(dir, `q-${quantize}`)})
      results[quantize] = r
      const factor = quantize === 'uint8' ? 0.4 : 0.65
      for (const f of r.formats) {
        assert.equal(f.quantization, quantize)
        assert.ok(f.bytes < f.unquantizedBytes * factor, `${quantize} ${f.format}: ${f.bytes} of ${f.unquantizedBytes} bytes`)
        assert.equal(typeof f.accuracy, 'number')
        assert.ok(Math.abs(f.accuracyDelta! - (f.accuracy! - r.evaluation.accuracy!)) < 1e-9)
        assert.ok(Math.abs(f.accuracyDelta!) <= (quantize === 'uint8' ? 0.05 : 0.01), `${quantize} ${f.format}: accuracy moved by ${f.accuracyDelta}`)
      }
      // tfjs and onnxruntime decode the same quantized numbers: the two formats agree.
      assert.equal(r.formats[0]!.accuracy, r.formats[1]!.accuracy)
      const json = JSON.parse(await readFile(path.join(r.dir, 'model.json'), 'utf8'))
      const kernel = json.weightsManifest[0].weights.find((w: {name: string}) => w.name.endsWith('/kernel'))
      assert.equal(kernel.quantization.dtype, quantize)
      assert.equal(kernel.quantization.original_dtype, 'float32')
      const model = await loadModel(r.dir)
      assert.equal(model.outputs[0]!.shape[1], 10)
      model.dispose()
      const predictor = await Predictor.load(r.dir)
      assert.deepEqual(predictor.labels.length, 10)
      predictor.dispose()
      const card = JSON.parse(await readFile(path.join(r.dir, 'model-card.json'), 'utf8'))
      assert.equal(card.quantization.mode, quantize)
      assert.ok(card.quantization.weights.length >= 3)
      assert.equal(card.formats[1].accuracy, r.formats[1]!.accuracy)
    }
    assert.ok(results.uint8!.formats[0]!.bytes < results.float16!.formats[0]!.bytes)
  })

  it('writes only the formats asked for (tfjs alone) and refuses unknown formats', async () => {
    const loaded = await loadConfig(configFile)
    const r = await runExport({loaded, formats: ['tfjs'], dir: path.join(dir, 'tfjs-only')})
    assert.deepEqual(r.formats.map((f) => f.format), ['tfjs'])
    assert.ok(!(await readdir(r.dir)).includes('model.onnx'))
    assert.deepEqual(parseFormats('onnx, tfjs,onnx'), ['onnx', 'tfjs'])
    assert.throws(() => parseFormats('tfjs,savedmodel'), (error: unknown) => error instanceof UserError && /savedmodel/.test(error.message))
  })

  it('the CLI composes formats, quantizes and reports per-format JSON', async () => {
    const out = path.join(dir, 'cli-repo')
    const {code, json, stderr} = await runJson<ExportResult>(['export', '--config', configFile, '--format', 'tfjs,onnx,triton', '--quantize', 'float16', '--dir', out])
    assert.equal(code, 0, stderr)
    assert.equal(json.version, 1)
    assert.equal(json.quantization, 'float16')
    assert.deepEqual(json.formats.map((f) => [f.format, f.quantization]), [['tfjs', 'float16'], ['onnx', 'float16'], ['triton', 'float16']])
    for (const f of json.formats) for (const key of ['bytes', 'accuracy', 'accuracyDelta', 'files']) assert.ok(key in f, `${f.format} lacks ${key}`)
    assert.ok((await readdir(path.join(out, 'digits'))).includes('config.pbtxt'))
    const bad = await runJson<{error: {code: string}}>(['export', '--config', configFile, '--format', 'pt'])
    assert.equal(bad.code, 2)
  })
})

describe('ml export with an empty test split', () => {
  it('leaves accuracy null and says why', async () => {
    const {dir, cleanup} = await tempDir('ml-export-empty-')
    try {
      await mnistFolders(dir, 120, 0)
      const file = await writeMnistConfig(dir, {model: {preset: 'mlp'}, train: {epochs: 1}, data: {sources: [{type: 'folder', path: 'data/train'}]}})
      const loaded = await loadConfig(file)
      await runIngest({config: loaded.config, baseDir: loaded.baseDir})
      await runTraining({loaded, runId: 'no-test'})
      const r = await runExport({loaded, formats: ['tfjs', 'onnx'], quantize: 'uint8'})
      assert.equal(r.evaluation.count, 0)
      assert.equal(r.evaluation.accuracy, null)
      for (const f of r.formats) {
        assert.equal(f.accuracy, null)
        assert.equal(f.accuracyDelta, null)
      }
      assert.ok(r.notes.some((n) => /test split .* is empty/.test(n)), r.notes.join('; '))
      const card = JSON.parse(await readFile(path.join(r.dir, 'model-card.json'), 'utf8'))
      assert.match(card.evaluation.note, /empty/)
      assert.match(await readFile(path.join(r.dir, 'MODEL_CARD.md'), 'utf8'), /empty: accuracy not measured/)
    } finally {
      await cleanup()
    }
  })
})
