// Real gRPC clients against `ml serve --grpc-port`: Triton's tritonclient.grpc (health, metadata, FP32
// tensors as raw_input_contents, PNG files as a BYTES tensor, the classification extension) and the
// KServe Python SDK's InferenceGRPCClient; every answer equals the probabilities the same model gives
// in process.
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {maxAbsDiff} from '../../src/lib/export/onnx-runtime.js'
import {tempDir} from '../support/fixtures.js'
import {startDigitsServer, type DigitsServer} from '../support/serve-fixtures.js'
import {pythonSkip, runPython} from './support/python.js'

const skip = pythonSkip()
const TOLERANCE = 1e-5

let served: DigitsServer
let dir: string
let cleanup: () => Promise<void>
let input: string
let address: string
const pngs: string[] = []
let n: number

before(async () => {
  if (skip) return
  served = await startDigitsServer('ml-peer-grpc-', {grpc: {port: 0}})
  address = `127.0.0.1:${served.server.grpcPort}`
  ;({dir, cleanup} = await tempDir('ml-peer-grpc-in-'))
  n = served.floats.length
  const batch = new Float32Array(n * served.floats[0]!.length)
  served.floats.forEach((f, i) => batch.set(f, i * f.length))
  input = path.join(dir, 'images.f32')
  await writeFile(input, Buffer.from(batch.buffer))
  for (const [i, d] of served.digits.entries()) {
    const file = path.join(dir, `${i}.png`)
    await writeFile(file, d.png)
    pngs.push(file)
  }
})
after(async () => {
  await served?.close()
  await cleanup?.()
})

const close = (actual: number[], label: string) => {
  const diff = maxAbsDiff(Float32Array.from(actual), served.expected)
  assert.ok(diff <= TOLERANCE, `${label}: differs from the in-process prediction by ${diff}`)
}

describe('real gRPC clients against ml serve --grpc-port', {skip}, () => {
  it('tritonclient.grpc: live, ready, metadata, FP32 and BYTES tensors, classification', async () => {
    const r = await runPython<Record<string, any>>('grpc_clients.py', ['triton', address, 'digits', input, String(n), ...pngs])
    assert.deepEqual([r.live, r.ready, r.modelReady], [true, true, true])
    assert.equal(r.serverMetadata.name, 'ml')
    assert.ok(r.serverMetadata.extensions.includes('classification'))
    assert.equal(r.modelMetadata.name, 'digits')
    assert.deepEqual(r.modelMetadata.inputs, [{name: 'image', datatype: 'FP32', shape: ['-1', '28', '28', '1']}])
    assert.deepEqual(r.modelMetadata.outputs.map((t: {name: string}) => t.name), ['probabilities'])
    close(r.fp32, 'FP32 tensors')
    close(r.bytes, 'PNG files as BYTES')
    const k = served.expected.length / n
    r.classification.forEach((row: string[], i: number) => {
      const probs = Array.from(served.expected.subarray(i * k, (i + 1) * k))
      const top = probs.map((p, c) => [p, c] as const).sort((a, b) => b[0] - a[0]).slice(0, 3)
      assert.equal(row.length, 3)
      row.forEach((entry, j) => {
        const [score, index] = entry.split(':')
        assert.equal(Number(index), top[j]![1], `image ${i} rank ${j}: ${entry}`)
        assert.ok(Math.abs(Number(score) - top[j]![0]) <= 1e-4, `image ${i} rank ${j}: ${entry}`)
      })
    })
  })

  it('the KServe Python SDK gRPC client: live, ready, model ready, infer', async () => {
    const r = await runPython<Record<string, any>>('grpc_clients.py', ['kserve', address, 'digits', input, String(n)])
    assert.deepEqual([r.live, r.ready, r.modelReady], [true, true, true])
    close(r.probabilities, 'KServe gRPC')
  })
})
