import assert from 'node:assert/strict'
import {once} from 'node:events'
import {after, before, describe, it} from 'node:test'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {serveOptions} from '../../../src/lib/serve/options.js'
import {startServer, type ServeHandle} from '../../../src/lib/serve/server.js'
import {runJson} from '../../support/cli.js'
import {tempDir} from '../../support/fixtures.js'
import {request, startServe, testDigits, trainServeModel, type ServeModel} from '../../support/serve-fixtures.js'

describe('ONNX Runtime by default (onnxruntime-node)', () => {
  let cleanup: () => Promise<void>
  let model: ServeModel
  let auto: ServeHandle
  let tfjsOnly: ServeHandle
  let body: object

  before(async () => {
    const temp = await tempDir('ml-serve-onnx-')
    cleanup = temp.cleanup
    // Version 1: the default formats (tfjs and onnx); version 2: ONNX only; version 3: tfjs only.
    model = await trainServeModel(temp.dir)
    for (const [version, format] of [['2', 'onnx'], ['3', 'tfjs']] as const) {
      const exported = await runJson(['export', '--config', model.config, '--format', format, '--version', version])
      // No skipping: an export that fails here is a failure of the product.
      assert.equal(exported.code, 0, `ml export --format ${format} failed: ${JSON.stringify(exported.json).slice(0, 500)}\n${exported.stderr}`)
    }
    const digits = await testDigits(temp.dir, 1)
    body = {inputs: [{name: 'image', shape: [3], datatype: 'BYTES', data: digits.slice(0, 3).map((d) => d.png.toString('base64'))}]}
    const options = (runtime: 'auto' | 'tfjs') => serveOptions({repository: model.repository, port: 0, instances: 1, maxBatchSize: 8, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm', runtime})
    auto = await startServer(options('auto'), {log: new JsonLog(undefined)})
    tfjsOnly = await startServer(options('tfjs'), {log: new JsonLog(undefined)})
  })

  after(async () => {
    await Promise.all([auto?.close(), tfjsOnly?.close()])
    await cleanup?.()
  })

  it('the default export writes model.onnx beside the tfjs files', async () => {
    const {readdir} = await import('node:fs/promises')
    const files = await readdir(model.versionDir)
    assert.ok(files.includes('model.onnx') && files.includes('model.json'), files.join(', '))
  })

  it('auto serves model.onnx with ONNX Runtime whenever it is there, tfjs only without it, with the same answers', async () => {
    assert.equal((await request(`${auto.url}/v2/models/digits/versions/1`)).json.platform, 'onnxruntime_onnx')
    assert.equal((await request(`${auto.url}/v2/models/digits/versions/2`)).json.platform, 'onnxruntime_onnx')
    assert.equal((await request(`${auto.url}/v2/models/digits/versions/3`)).json.platform, 'tensorflowjs_layers')
    const onnx = await request(`${auto.url}/v2/models/digits/versions/1/infer`, {body})
    const tfjs = await request(`${auto.url}/v2/models/digits/versions/3/infer`, {body})
    assert.equal(tfjs.status, 200, tfjs.text)
    assert.equal(onnx.status, 200, onnx.text)
    assert.deepEqual(onnx.json.outputs[0].shape, [3, 10])
    const a = tfjs.json.outputs[0].data as number[]
    const b = onnx.json.outputs[0].data as number[]
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-4, `element ${i}: ${a[i]} vs ${b[i]}`)
  })

  it('/v2 server metadata names the engine, its threads and instances', async () => {
    const {json} = await request(`${auto.url}/v2`)
    assert.equal(json.engine.runtime, 'auto')
    assert.equal(json.engine.onnx, 'onnxruntime (cpu)')
    assert.equal(json.engine.tfjs, 'wasm')
    assert.match(json.engine.onnxruntimeVersion, /^\d+\.\d+/)
    assert.deepEqual([json.engine.instances, json.engine.threads, json.engine.processes], [1, 1, 1])
  })

  it('an instance starts TensorFlow.js only with a version it runs: not started while ONNX versions alone are served, named once one is added', async () => {
    const {cp, mkdtemp, rm} = await import('node:fs/promises')
    const path = await import('node:path')
    const os = await import('node:os')
    const repository = await mkdtemp(path.join(os.tmpdir(), 'ml-onnx-only-'))
    await cp(path.join(model.repository, 'digits', '2'), path.join(repository, 'digits', '2'), {recursive: true})
    const server = await startServer(serveOptions({repository, port: 0, instances: 2, maxBatchSize: 8, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm', runtime: 'auto'}), {log: new JsonLog(undefined)})
    try {
      assert.equal(server.pool.backend, '')
      const meta = (await request(`${server.url}/v2`)).json
      assert.equal(meta.engine.tfjs, 'not started')
      assert.equal(meta.engine.onnx, 'onnxruntime (cpu)')
      assert.equal((await request(`${server.url}/v2/models/digits/versions/2/infer`, {body})).status, 200)
      // A tfjs-only version appears: loading it starts TensorFlow.js in every instance, and the metadata says which backend.
      await cp(path.join(model.repository, 'digits', '3'), path.join(repository, 'digits', '3'), {recursive: true})
      const started = once(server.pool, 'engine')
      await server.repository.scan()
      assert.deepEqual(await started, ['wasm'])
      assert.equal((await request(`${server.url}/v2/models/digits/versions/3/infer`, {body})).status, 200)
      assert.equal(server.pool.backend, 'wasm')
      assert.equal((await request(`${server.url}/v2`)).json.engine.tfjs, 'wasm')
    } finally {
      await server.close()
      await rm(repository, {recursive: true, force: true})
    }
  })

  it('serve.runtime tfjs serves model.json even beside model.onnx, and rejects a version without one', async () => {
    const status = (await request(`${tfjsOnly.url}/v1/models/digits`)).json.model_version_status
    assert.deepEqual(status.map((s: {version: string; state: string}) => `${s.version}:${s.state}`), ['3:AVAILABLE', '2:END', '1:AVAILABLE'])
    assert.match(status[1].status.error_message, /model\.json not found \(serve\.runtime is tfjs\)/)
    assert.equal((await request(`${tfjsOnly.url}/v2/models/digits/versions/1`)).json.platform, 'tensorflowjs_layers')
    // Forced to TensorFlow.js: the engine says so.
    assert.equal((await request(`${tfjsOnly.url}/v2`)).json.engine.onnx, 'tfjs (wasm)')
  })

  it('without onnxruntime-node, serve falls back to TensorFlow.js with one notice, and an ONNX-only version fails by name', async () => {
    const server = await startServe(['--config', model.config, '--port', '0', '--instances', '1'], {env: {...process.env, ML_DISABLE_ONNXRUNTIME: '1'}})
    try {
      assert.equal((await request(`${server.url}/v2/models/digits/versions/1`)).json.platform, 'tensorflowjs_layers')
      const meta = (await request(`${server.url}/v2`)).json
      assert.match(meta.engine.onnx, /^tfjs/)
      assert.equal(meta.engine.onnxruntimeVersion, null)
      const status = (await request(`${server.url}/v1/models/digits/versions/2`)).json.model_version_status
      assert.match(status[0].status.error_message, /only model\.onnx found.*onnxruntime-node is disabled/)
      const engineEvents = server.stderr().split('\n').filter((line) => line.includes('"inference-engine"'))
      assert.equal(engineEvents.length, 1, server.stderr())
      assert.match(engineEvents[0]!, /onnxruntime-node is disabled/)
    } finally {
      server.child.kill('SIGTERM')
      await server.done
    }
  })
})
