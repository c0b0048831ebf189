import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {serveOptions} from '../../../src/lib/serve/options.js'
import {startServer, type ServeHandle} from '../../../src/lib/serve/server.js'
import {runJson} from '../../support/cli.js'
import {tempDir} from '../../support/fixtures.js'
import {request, testDigits, trainServeModel, type ServeModel} from '../../support/serve-fixtures.js'

describe('the ONNX Runtime runtime (onnxruntime-node)', () => {
  let cleanup: () => Promise<void>
  let model: ServeModel
  let skip: string | undefined
  let auto: ServeHandle | undefined
  let onnxOnly: ServeHandle | undefined
  let body: object

  before(async () => {
    const temp = await tempDir('ml-serve-onnx-')
    cleanup = temp.cleanup
    model = await trainServeModel(temp.dir)
    // Version 2: ONNX only; version 3: both formats.
    for (const [version, format] of [['2', 'onnx'], ['3', 'tfjs,onnx']] as const) {
      const exported = await runJson(['export', '--config', model.config, '--format', format, '--version', version])
      if (exported.code !== 0) {
        skip = `ml export --format ${format} is not available here (exit ${exported.code}): ${JSON.stringify(exported.json).slice(0, 300)}`
        return
      }
    }
    const digits = await testDigits(temp.dir, 1)
    body = {inputs: [{name: 'image', shape: [3], datatype: 'BYTES', data: digits.slice(0, 3).map((d) => d.png.toString('base64'))}]}
    const options = (runtime: 'auto' | 'onnx') => serveOptions({repository: model.repository, port: 0, instances: 1, maxBatchSize: 8, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm', runtime})
    auto = await startServer(options('auto'), {log: new JsonLog(undefined)})
    onnxOnly = await startServer(options('onnx'), {log: new JsonLog(undefined)})
  })

  after(async () => {
    await Promise.all([auto?.close(), onnxOnly?.close()])
    await cleanup?.()
  })

  it('auto: model.json means TensorFlow.js, model.onnx alone means ONNX Runtime, with the same answers', async (t) => {
    if (skip) {
      t.skip(skip)
      return
    }
    assert.equal((await request(`${auto!.url}/v2/models/digits/versions/1`)).json.platform, 'tensorflowjs_layers')
    assert.equal((await request(`${auto!.url}/v2/models/digits/versions/2`)).json.platform, 'onnxruntime_onnx')
    assert.equal((await request(`${auto!.url}/v2/models/digits/versions/3`)).json.platform, 'tensorflowjs_layers')
    const tfjs = await request(`${auto!.url}/v2/models/digits/versions/1/infer`, {body})
    const onnx = await request(`${auto!.url}/v2/models/digits/versions/2/infer`, {body})
    assert.equal(tfjs.status, 200, tfjs.text)
    assert.equal(onnx.status, 200, onnx.text)
    assert.deepEqual(onnx.json.outputs[0].shape, [3, 10])
    const a = tfjs.json.outputs[0].data as number[]
    const b = onnx.json.outputs[0].data as number[]
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-4, `element ${i}: ${a[i]} vs ${b[i]}`)
  })

  it('serve.runtime onnx serves model.onnx even beside model.json, and rejects a version without one', async (t) => {
    if (skip) {
      t.skip(skip)
      return
    }
    const status = (await request(`${onnxOnly!.url}/v1/models/digits`)).json.model_version_status
    assert.deepEqual(status.map((s: {version: string; state: string}) => `${s.version}:${s.state}`), ['3:AVAILABLE', '2:AVAILABLE', '1:END'])
    assert.match(status[2].status.error_message, /model\.onnx not found \(serve\.runtime is onnx\)/)
    assert.equal((await request(`${onnxOnly!.url}/v2/models/digits`)).json.platform, 'onnxruntime_onnx')
    const result = await request(`${onnxOnly!.url}/v2/models/digits/infer`, {body: {...body, outputs: [{name: 'probabilities', parameters: {classification: 2}}]}})
    assert.equal(result.status, 200, result.text)
    assert.equal(result.json.model_version, '3')
    assert.deepEqual(result.json.outputs[0].shape, [3, 2])
  })
})
