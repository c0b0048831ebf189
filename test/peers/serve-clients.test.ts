// Real clients against `ml serve`: Triton's tritonclient.http (health, metadata, JSON and binary
// tensors, the classification extension), the KServe Python SDK's REST client (V2 and V1), and a
// TF Serving REST :predict request as the TF Serving docs write it; every answer equals the
// probabilities the same model gives in process.
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'
import {serveForClients, type ServedForClients} from './support/clients.js'
import {pythonSkip, runPython} from './support/python.js'

const skip = pythonSkip()

let c: ServedForClients

before(async () => {
  if (skip) return
  c = await serveForClients('ml-peer-clients-')
})
after(async () => {
  await c?.stop()
})

describe('real clients against ml serve', {skip}, () => {
  it('tritonclient.http: live, ready, metadata, JSON and binary tensors, classification', async () => {
    const r = await runPython<Record<string, any>>('serve_clients.py', ['triton', c.served.server.url, 'digits', c.input, String(c.n)])
    assert.deepEqual([r.live, r.ready, r.modelReady], [true, true, true])
    assert.ok(r.serverMetadata.extensions.includes('binary_tensor_data') && r.serverMetadata.extensions.includes('classification'))
    assert.equal(r.modelMetadata.name, 'digits')
    assert.deepEqual(r.modelMetadata.inputs.map((t: {name: string; datatype: string}) => [t.name, t.datatype]), [['image', 'FP32']])
    assert.deepEqual(r.modelMetadata.outputs.map((t: {name: string}) => t.name), ['probabilities'])
    c.close(r.json, 'JSON tensors')
    c.close(r.binary, 'binary tensors')
    c.top3(r.classification)
  })

  it('the KServe Python SDK REST client: infer over V2 and V1', async () => {
    const r = await runPython<Record<string, any>>('serve_clients.py', ['kserve', c.served.server.url, 'digits', c.input, String(c.n)])
    c.close(r.v2.probabilities, 'KServe V2')
    c.close(r.v1, 'KServe V1')
  })

  // The Open Inference Protocol answers health with {"live": true} / {"ready": true} bodies, which the
  // KServe SDK parses (Triton's clients read only the status code).
  it('the KServe Python SDK REST client: server live and ready, model ready', async () => {
    const r = await runPython<Record<string, boolean>>('serve_clients.py', ['kserve-health', c.served.server.url, 'digits'])
    assert.deepEqual([r.live, r.ready, r.modelReady], [true, true, true])
  })

  it('a TF Serving REST :predict with {"instances": [{"b64": ...}]}', async () => {
    const r = await runPython<{predictions: number[]}>('serve_clients.py', ['tfserving', c.served.server.url, 'digits', ...c.pngs])
    c.close(r.predictions, 'TF Serving b64')
  })
})
