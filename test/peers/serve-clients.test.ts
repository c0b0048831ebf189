// Real clients against `ml serve`: Triton's tritonclient.http (health, metadata, JSON and binary
// tensors, the classification extension), the KServe Python SDK's REST client (V2 and V1), and a
// TF Serving REST :predict request as the TF Serving docs write it; every answer equals the
// probabilities the same model gives in process.
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
let n: number

before(async () => {
  if (skip) return
  served = await startDigitsServer('ml-peer-clients-')
  ;({dir, cleanup} = await tempDir('ml-peer-clients-in-'))
  n = served.floats.length
  const batch = new Float32Array(n * served.floats[0]!.length)
  served.floats.forEach((f, i) => batch.set(f, i * f.length))
  input = path.join(dir, 'images.f32')
  await writeFile(input, Buffer.from(batch.buffer))
})
after(async () => {
  await served?.close()
  await cleanup?.()
})

const close = (actual: number[], label: string) => {
  const diff = maxAbsDiff(Float32Array.from(actual), served.expected)
  assert.ok(diff <= TOLERANCE, `${label}: differs from the in-process prediction by ${diff}`)
}

describe('real clients against ml serve', {skip}, () => {
  it('tritonclient.http: live, ready, metadata, JSON and binary tensors, classification', async () => {
    const r = await runPython<Record<string, any>>('serve_clients.py', ['triton', served.server.url, 'digits', input, String(n)])
    assert.deepEqual([r.live, r.ready, r.modelReady], [true, true, true])
    assert.ok(r.serverMetadata.extensions.includes('binary_tensor_data') && r.serverMetadata.extensions.includes('classification'))
    assert.equal(r.modelMetadata.name, 'digits')
    assert.deepEqual(r.modelMetadata.inputs.map((t: {name: string; datatype: string}) => [t.name, t.datatype]), [['image', 'FP32']])
    assert.deepEqual(r.modelMetadata.outputs.map((t: {name: string}) => t.name), ['probabilities'])
    close(r.json, 'JSON tensors')
    close(r.binary, 'binary tensors')
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

  it('the KServe Python SDK REST client: infer over V2 and V1', async () => {
    const r = await runPython<Record<string, any>>('serve_clients.py', ['kserve', served.server.url, 'digits', input, String(n)])
    close(r.v2.probabilities, 'KServe V2')
    close(r.v1, 'KServe V1')
  })

  // The Open Inference Protocol answers health with {"live": true} / {"ready": true} bodies, which the
  // KServe SDK parses (Triton's clients read only the status code).
  it('the KServe Python SDK REST client: server live and ready, model ready', async () => {
    const r = await runPython<Record<string, boolean>>('serve_clients.py', ['kserve-health', served.server.url, 'digits'])
    assert.deepEqual([r.live, r.ready, r.modelReady], [true, true, true])
  })

  it('a TF Serving REST :predict with {"instances": [{"b64": ...}]}', async () => {
    const pngs: string[] = []
    for (const [i, d] of served.digits.entries()) {
      const file = path.join(dir, `${i}.png`)
      await writeFile(file, d.png)
      pngs.push(file)
    }
    const r = await runPython<{predictions: number[]}>('serve_clients.py', ['tfserving', served.server.url, 'digits', ...pngs])
    close(r.predictions, 'TF Serving b64')
  })
})
