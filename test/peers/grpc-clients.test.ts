// Real gRPC clients against `ml serve --grpc-port`: Triton's tritonclient.grpc (health, metadata, FP32
// tensors as raw_input_contents, PNG files as a BYTES tensor, the classification extension) and the
// KServe Python SDK's InferenceGRPCClient; every answer equals the probabilities the same model gives
// in process.
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'
import {serveForClients, type ServedForClients} from './support/clients.js'
import {pythonSkip, runPython} from './support/python.js'

const skip = pythonSkip()

let c: ServedForClients
let address: string

before(async () => {
  if (skip) return
  c = await serveForClients('ml-peer-grpc-', {grpc: {port: 0}})
  address = `127.0.0.1:${c.served.server.grpcPort}`
})
after(async () => {
  await c?.stop()
})

describe('real gRPC clients against ml serve --grpc-port', {skip}, () => {
  it('tritonclient.grpc: live, ready, metadata, FP32 and BYTES tensors, classification', async () => {
    const r = await runPython<Record<string, any>>('grpc_clients.py', ['triton', address, 'digits', c.input, String(c.n), ...c.pngs])
    assert.deepEqual([r.live, r.ready, r.modelReady], [true, true, true])
    assert.equal(r.serverMetadata.name, 'ml')
    assert.ok(r.serverMetadata.extensions.includes('classification'))
    assert.equal(r.modelMetadata.name, 'digits')
    assert.deepEqual(r.modelMetadata.inputs, [{name: 'image', datatype: 'FP32', shape: ['-1', '28', '28', '1']}])
    assert.deepEqual(r.modelMetadata.outputs.map((t: {name: string}) => t.name), ['probabilities'])
    c.close(r.fp32, 'FP32 tensors')
    c.close(r.bytes, 'PNG files as BYTES')
    c.top3(r.classification)
  })

  it('the KServe Python SDK gRPC client: live, ready, model ready, infer', async () => {
    const r = await runPython<Record<string, any>>('grpc_clients.py', ['kserve', address, 'digits', c.input, String(c.n)])
    assert.deepEqual([r.live, r.ready, r.modelReady], [true, true, true])
    c.close(r.probabilities, 'KServe gRPC')
  })
})
