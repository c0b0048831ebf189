// ONNX in every export, checked: a graph whose outputs differ from the tfjs model beyond 1e-4 is
// refused (with or without a test split), and a layer ONNX cannot express leaves tfjs alone, said once.
import assert from 'node:assert/strict'
import {readdir} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import onnxProto from 'onnx-proto'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {ONNX_TOLERANCE, runExport} from '../../../src/lib/export/index.js'
import {convertToOnnx} from '../../../src/lib/export/onnx.js'
import {runTraining} from '../../../src/lib/train/trainer.js'
import {UserError} from '../../../src/lib/errors.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'

const {onnx} = onnxProto as unknown as {onnx: {ModelProto: {decode(b: Uint8Array): {graph: {initializer: Array<{name: string; dims: unknown[]; dataType: number; rawData: Uint8Array}>}}; encode(m: unknown): {finish(): Uint8Array}}}}

/** The real converter, then the classifier's bias nudged by `delta`: a graph that no longer matches tfjs. */
function nudgedConverter(delta: number): typeof convertToOnnx {
  return (options) => {
    const model = onnx.ModelProto.decode(convertToOnnx(options))
    const biases = model.graph.initializer.filter((t) => t.dataType === 1 && t.dims.length === 1)
    const bias = biases.at(-1)!
    const raw = Buffer.from(bias.rawData)
    raw.writeFloatLE(raw.readFloatLE(0) + delta, 0)
    bias.rawData = raw
    return onnx.ModelProto.encode(model).finish()
  }
}

describe('ml export checks the ONNX graph against tfjs', () => {
  let dir: string
  let cleanup: () => Promise<void>

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-export-onnx-check-'))
  })
  after(() => cleanup())

  async function trained(name: string, model: object, data?: object) {
    const sub = path.join(dir, name)
    await mnistFolders(sub, 200, 60)
    const loaded = await loadConfig(await writeMnistConfig(sub, {model, train: {epochs: 1}, ...(data ? {data} : {})}))
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
    await runTraining({loaded, runId: 'run-1'})
    return loaded
  }

  it('writes model.onnx by default, within the tolerance of tfjs on the test split', async () => {
    const loaded = await trained('plain', {preset: 'mlp'})
    assert.deepEqual(loaded.config.export.formats, ['tfjs', 'onnx'])
    const r = await runExport({loaded})
    assert.deepEqual(r.formats.map((f) => f.format), ['tfjs', 'onnx'])
    assert.ok((await readdir(r.dir)).includes('model.onnx'))
    const onnxResult = r.formats[1]!
    assert.ok(onnxResult.maxAbsDiff !== null && onnxResult.maxAbsDiff <= ONNX_TOLERANCE, String(onnxResult.maxAbsDiff))

    // The same run, with a converter whose graph is off by a little: refused, nothing written.
    const before = await readdir(path.join(dir, 'plain', 'models', 'digits'))
    await assert.rejects(runExport({loaded, version: 7, converter: nudgedConverter(0.05)}), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'EXPORT_ONNX_MISMATCH')
      assert.match(error.message, /differs from the tfjs model by .* on the 60 test images \(tolerance 0\.0001\)/)
      return true
    })
    assert.deepEqual(await readdir(path.join(dir, 'plain', 'models', 'digits')), before, 'a refused export leaves no version and no staging folder')
    // Below the tolerance, the same nudge mechanism passes: the check measures, it does not guess.
    const fine = await runExport({loaded, version: 8, converter: nudgedConverter(1e-7)})
    assert.ok(fine.formats[1]!.maxAbsDiff! <= ONNX_TOLERANCE)
  })

  it('refuses a differing graph without a test split too (checked on synthetic images)', async () => {
    const loaded = await trained('no-test', {preset: 'mlp'}, {sources: [{type: 'folder', path: 'data/train'}]})
    await assert.rejects(runExport({loaded, converter: nudgedConverter(0.05)}), (error: unknown) => error instanceof UserError && error.code === 'EXPORT_ONNX_MISMATCH' && /synthetic images/.test(error.message))
    const r = await runExport({loaded})
    assert.ok((await readdir(r.dir)).includes('model.onnx'))
  })

  it('a layer ONNX cannot express: tfjs only, with one note naming the layer', async () => {
    const loaded = await trained('upsample', {layers: [{type: 'upSampling2d', size: [2, 2]}, {type: 'flatten'}]})
    const r = await runExport({loaded})
    assert.deepEqual(r.formats.map((f) => f.format), ['tfjs'])
    assert.ok(!(await readdir(r.dir)).includes('model.onnx'))
    const notes = r.notes.filter((n) => /ONNX/.test(n))
    assert.equal(notes.length, 1, r.notes.join('\n'))
    assert.match(notes[0]!, /layer "upsampling2d_1" \(UpSampling2D\).*wrote tfjs only \(not onnx\)/)
    // Asked for ONNX alone, the same model is an error naming the layer.
    await assert.rejects(runExport({loaded, formats: ['onnx'], version: 9}), (error: unknown) => error instanceof UserError && error.code === 'EXPORT_UNSUPPORTED_LAYER')
  })
})
