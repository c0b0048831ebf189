import assert from 'node:assert/strict'
import {once} from 'node:events'
import net from 'node:net'
import {after, before, describe, it} from 'node:test'
import type {ServeHandle} from '../../../src/lib/serve/server.js'
import {fp32Body, request, startDigitsServer, type DigitsServer} from '../../support/serve-fixtures.js'

function assertClose(actual: number[], expected: ArrayLike<number>, tolerance = 1e-5): void {
  assert.equal(actual.length, expected.length)
  for (let i = 0; i < actual.length; i++) assert.ok(Math.abs(actual[i]! - expected[i]!) <= tolerance, `element ${i}: ${actual[i]} vs ${expected[i]}`)
}

function nest(flat: Float32Array): number[][][] {
  return Array.from({length: 28}, (_, y) => Array.from({length: 28}, (_, x) => [flat[y * 28 + x]!]))
}

/** Errors are `{"error": "<message>"}` in both protocols, and a client's mistake is never a 5xx. */
function assertError(result: {status: number; json: any; text: string}, status: number, pattern?: RegExp): void {
  assert.equal(result.status, status, `expected ${status}, got ${result.status}: ${result.text}`)
  assert.deepEqual(Object.keys(result.json ?? {}), ['error'], `error body: ${result.text}`)
  assert.equal(typeof result.json.error, 'string')
  if (pattern) assert.match(result.json.error, pattern)
}

describe('serving protocols (KServe V2, TF Serving REST, raw images)', () => {
  let fixture: DigitsServer
  let server: ServeHandle
  let base: string
  let digits: Array<{label: string; png: Buffer}>
  let floats: Float32Array[]
  let expected: Float32Array

  before(async () => {
    fixture = await startDigitsServer('ml-serve-protocols-', {models: [{name: 'digits', labels: {stable: 1}}], clientTimeoutMs: 1500})
    ;({server, digits, floats, expected} = fixture)
    base = server.url
  })

  after(async () => {
    await fixture?.close()
  })

  describe('health and metadata', () => {
    it('answers liveness and readiness: KServe by status code with the Open Inference Protocol bodies, /healthz and /readyz as JSON', async () => {
      const expected: Record<string, unknown> = {
        '/v2/health/live': {live: true},
        '/v2/health/ready': {ready: true},
        '/v2/models/digits/ready': {name: 'digits', ready: true},
        '/v2/models/digits/versions/1/ready': {name: 'digits', ready: true},
      }
      for (const [path, body] of Object.entries(expected)) {
        const result = await request(base + path)
        assert.equal(result.status, 200, path)
        assert.deepEqual(result.json, body, path)
      }
      const missing = await request(`${base}/v2/models/digits/versions/7/ready`)
      assert.equal(missing.status, 400)
      assert.deepEqual(missing.json, {name: 'digits', ready: false})
      assertError(await request(`${base}/v2/models/nope/ready`), 404, /unknown model "nope"/)
      assert.deepEqual((await request(`${base}/healthz`)).json, {status: 'ok'})
      assert.deepEqual((await request(`${base}/readyz`)).json, {status: 'ready'})
      assert.equal((await request(`${base}/readyz`, {method: 'HEAD'})).status, 200)
    })

    it('GET /v2 describes the server and its extensions', async () => {
      const {status, json} = await request(`${base}/v2`)
      assert.equal(status, 200)
      assert.equal(json.name, 'ml')
      assert.match(json.version, /^\d+\.\d+\.\d+/)
      assert.ok(json.extensions.includes('classification'))
    })

    it('model metadata has the input and output tensors with -1 for the batch', async () => {
      const expectedMetadata = {
        name: 'digits',
        versions: ['1'],
        // The default export writes model.onnx, which ONNX Runtime serves.
        platform: 'onnxruntime_onnx',
        inputs: [{name: 'image', datatype: 'FP32', shape: [-1, 28, 28, 1]}],
        outputs: [{name: 'probabilities', datatype: 'FP32', shape: [-1, 10]}],
      }
      assert.deepEqual((await request(`${base}/v2/models/digits`)).json, expectedMetadata)
      assert.deepEqual((await request(`${base}/v2/models/digits/versions/1`)).json, expectedMetadata)
      assertError(await request(`${base}/v2/models/digits/versions/3`), 404, /version 3 of model "digits" not found/)
      assertError(await request(`${base}/v2/models/digits/versions/x1`), 400, /invalid version/)
      assertError(await request(`${base}/v2/models/other`), 404, /unknown model "other"; served: digits/)
    })

    it('TF Serving status and metadata, by version and by label', async () => {
      const available = {model_version_status: [{version: '1', state: 'AVAILABLE', status: {error_code: 'OK', error_message: ''}}]}
      assert.deepEqual((await request(`${base}/v1/models/digits`)).json, available)
      assert.deepEqual((await request(`${base}/v1/models/digits/versions/1`)).json, available)
      assert.deepEqual((await request(`${base}/v1/models/digits/labels/stable`)).json, available)
      assertError(await request(`${base}/v1/models/digits/versions/2`), 404)
      assertError(await request(`${base}/v1/models/digits/labels/canary`), 404, /no version label "canary" \(labels: stable\)/)
      const {json} = await request(`${base}/v1/models/digits/metadata`)
      assert.deepEqual(json.model_spec, {name: 'digits', signature_name: '', version: '1'})
      const signature = json.metadata.signature_def.signature_def.serving_default
      assert.deepEqual(signature.inputs.image.tensor_shape.dim.map((d: {size: string}) => d.size), ['-1', '28', '28', '1'])
      assert.equal(signature.inputs.image.dtype, 'DT_FLOAT')
      assert.deepEqual(signature.outputs.probabilities.tensor_shape.dim.map((d: {size: string}) => d.size), ['-1', '10'])
      assert.equal(signature.method_name, 'tensorflow/serving/predict')
    })

    it('POST /v2/repository/index lists versions with their state', async () => {
      const {status, json} = await request(`${base}/v2/repository/index`, {method: 'POST', body: {}})
      assert.equal(status, 200)
      assert.deepEqual(json, [{name: 'digits', version: '1', state: 'READY'}])
    })
  })

  describe('KServe V2 inference', () => {
    it('FP32 tensors, flat or nested, give exactly what the model gives in process', async () => {
      const flat = await request(`${base}/v2/models/digits/infer`, {body: {id: 'req-1', ...fp32Body(floats.slice(0, 3))}})
      assert.equal(flat.status, 200, flat.text)
      assert.equal(flat.json.model_name, 'digits')
      assert.equal(flat.json.model_version, '1')
      assert.equal(flat.json.id, 'req-1')
      assert.equal(flat.json.outputs.length, 1)
      const [output] = flat.json.outputs
      assert.deepEqual({name: output.name, datatype: output.datatype, shape: output.shape}, {name: 'probabilities', datatype: 'FP32', shape: [3, 10]})
      assertClose(output.data, expected.subarray(0, 30))
      const nested = await request(`${base}/v2/models/digits/versions/1/infer`, {body: {inputs: [{name: 'image', shape: [2, 28, 28, 1], datatype: 'FP32', data: [nest(floats[3]!), nest(floats[4]!)]}]}})
      assert.equal(nested.status, 200, nested.text)
      assertClose(nested.json.outputs[0].data, expected.subarray(30, 50))
    })

    it('BYTES elements carry base64 images, preprocessed as in training', async () => {
      const body = {inputs: [{name: 'image', shape: [10], datatype: 'BYTES', data: digits.map((d) => d.png.toString('base64'))}]}
      const {status, json, text} = await request(`${base}/v2/models/digits/infer`, {body})
      assert.equal(status, 200, text)
      assert.deepEqual(json.outputs[0].shape, [10, 10])
      assertClose(json.outputs[0].data, expected)
      const columns = await request(`${base}/v2/models/digits/infer`, {body: {inputs: [{...body.inputs[0], shape: [2, 1], data: [[body.inputs[0]!.data[0]], [body.inputs[0]!.data[1]]]}]}})
      assert.equal(columns.status, 200, columns.text)
      assertClose(columns.json.outputs[0].data, expected.subarray(0, 20))
    })

    it('the classification extension returns the top K as "score:index:label" strings', async () => {
      const {status, json, text} = await request(`${base}/v2/models/digits/infer`, {
        body: {...fp32Body(floats.slice(0, 2)), outputs: [{name: 'probabilities', parameters: {classification: 3}}]},
      })
      assert.equal(status, 200, text)
      const [output] = json.outputs
      assert.deepEqual({name: output.name, datatype: output.datatype, shape: output.shape}, {name: 'probabilities', datatype: 'BYTES', shape: [2, 3]})
      for (let row = 0; row < 2; row++) {
        const scores = Array.from(expected.subarray(row * 10, row * 10 + 10))
        const best = scores.indexOf(Math.max(...scores))
        const first = output.data[row * 3] as string
        assert.match(first, /^\d\.\d{6}:\d:\d$/)
        assert.equal(first, `${scores[best]!.toFixed(6)}:${best}:${best}`)
      }
    })

    it('rejects bad requests with 400 and the reason', async () => {
      const infer = (body: unknown, headers?: Record<string, string>) => request(`${base}/v2/models/digits/infer`, {body: body as object, headers})
      assertError(await request(`${base}/v2/models/digits/infer`, {body: '{"inputs": [', headers: {'Content-Type': 'application/json'}}), 400, /malformed JSON/)
      assertError(await request(`${base}/v2/models/digits/infer`, {body: '', headers: {'Content-Type': 'application/json'}}), 400, /empty/)
      assertError(await infer([1, 2]), 400, /JSON object/)
      assertError(await infer({inputs: []}), 400, /non-empty array/)
      assertError(await infer({inputs: [{name: 'pixels', shape: [1, 28, 28, 1], datatype: 'FP32', data: Array.from(floats[0]!)}]}), 400, /unexpected inference input "pixels"/)
      assertError(await infer({inputs: [{name: 'image', shape: [1, 28, 28], datatype: 'FP32', data: Array.from(floats[0]!)}]}), 400, /shape \[1,28,28\] does not match the model input \[-1,28,28,1\]/)
      assertError(await infer({inputs: [{name: 'image', shape: [2, 28, 28, 1], datatype: 'FP32', data: Array.from(floats[0]!)}]}), 400, /needs 1568 values, "data" has 784/)
      assertError(await infer({inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'INT32', data: Array.from(floats[0]!)}]}), 400, /datatype "INT32" is not accepted/)
      assertError(await infer({inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', data: ['a', ...Array.from(floats[0]!).slice(1)]}]}), 400, /expected numbers, found string/)
      assertError(await infer({...fp32Body([floats[0]!]), outputs: [{name: 'logits'}]}), 400, /unexpected inference output "logits"/)
      assertError(await infer({...fp32Body([floats[0]!]), outputs: [{name: 'probabilities', parameters: {classification: 0}}]}), 400, /classification must be a positive integer/)
      assertError(await infer(fp32Body(Array.from({length: 11}, () => floats[0]!))), 400, /11 images in one request is over serve.maxBatchSize \(10\)/)
      assertError(await infer({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [Buffer.from('not an image at all').toString('base64')]}]}), 400, /not a recognised image format/)
      assertError(await infer({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: ['%%%']}]}), 400, /not valid base64/)
      const half = digits[0]!.png.subarray(0, digits[0]!.png.length >> 1).toString('base64')
      assertError(await infer({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [half]}]}), 400, /png could not be decoded/)
      assertError(await infer({inputs: [{name: 'image', shape: [2], datatype: 'BYTES', data: [digits[0]!.png.toString('base64')]}]}), 400, /needs 2 elements/)
    })

    it('unknown models and versions are 404, other methods 405, other content types 415', async () => {
      assertError(await request(`${base}/v2/models/nope/infer`, {body: fp32Body([floats[0]!])}), 404, /unknown model "nope"/)
      assertError(await request(`${base}/v2/models/digits/versions/2/infer`, {body: fp32Body([floats[0]!])}), 404, /version 2 of model "digits" not found/)
      const get = await request(`${base}/v2/models/digits/infer`)
      assertError(get, 405, /GET is not allowed/)
      assert.equal(get.headers.allow, 'POST')
      assertError(await request(`${base}/v2/models/digits/infer`, {body: '<xml/>', headers: {'Content-Type': 'application/xml'}}), 415, /application\/json/)
      assertError(await request(`${base}/v3/anything`), 404, /no such endpoint/)
      assertError(await request(`${base}/v2/models/%E0%A4%A/infer`, {body: fp32Body([floats[0]!])}), 400, /malformed URL/)
    })
  })

  describe('TF Serving REST', () => {
    it(':predict takes row instances (numbers or {"b64"}) and answers predictions', async () => {
      const instances = [nest(floats[0]!), {b64: digits[1]!.png.toString('base64')}, {image: {b64: digits[2]!.png.toString('base64')}}, Array.from(floats[3]!)]
      const {status, json, text} = await request(`${base}/v1/models/digits:predict`, {body: {signature_name: 'serving_default', instances}})
      assert.equal(status, 200, text)
      assert.deepEqual(Object.keys(json), ['predictions'])
      assert.equal(json.predictions.length, 4)
      json.predictions.forEach((row: number[], i: number) => assertClose(row, expected.subarray(i * 10, i * 10 + 10)))
    })

    it(':predict takes columnar inputs and answers outputs; by version and label too', async () => {
      for (const path of ['/v1/models/digits:predict', '/v1/models/digits/versions/1:predict', '/v1/models/digits/labels/stable:predict']) {
        const {status, json, text} = await request(base + path, {body: {inputs: {image: [nest(floats[5]!), nest(floats[6]!)]}}})
        assert.equal(status, 200, text)
        assert.deepEqual(Object.keys(json), ['outputs'])
        json.outputs.forEach((row: number[], i: number) => assertClose(row, expected.subarray((5 + i) * 10, (6 + i) * 10)))
      }
      const plain = await request(`${base}/v1/models/digits:predict`, {body: {inputs: [{b64: digits[7]!.png.toString('base64')}]}})
      assertClose(plain.json.outputs[0], expected.subarray(70, 80))
    })

    it(':classify answers [label, score] pairs, best first, for JSON examples', async () => {
      const examples = [{image: {b64: digits[8]!.png.toString('base64')}}, {image: [{b64: digits[9]!.png.toString('base64')}]}]
      const {status, json, text} = await request(`${base}/v1/models/digits:classify`, {body: {examples}})
      assert.equal(status, 200, text)
      assert.equal(json.results.length, 2)
      json.results.forEach((pairs: Array<[string, number]>, i: number) => {
        assert.equal(pairs.length, 10)
        const scores = Array.from(expected.subarray((8 + i) * 10, (9 + i) * 10))
        const best = scores.indexOf(Math.max(...scores))
        assert.equal(pairs[0]![0], String(best))
        assertClose([pairs[0]![1]], [scores[best]!])
        for (let k = 1; k < pairs.length; k++) assert.ok(pairs[k - 1]![1] >= pairs[k]![1])
      })
    })

    it(':classify with a raw image body (curl --data-binary)', async () => {
      const {status, json, text} = await request(`${base}/v1/models/digits:classify?top_k=3`, {body: digits[4]!.png, headers: {'Content-Type': 'image/png'}})
      assert.equal(status, 200, text)
      assert.equal(json.results.length, 1)
      assert.equal(json.results[0].length, 3)
      const scores = Array.from(expected.subarray(40, 50))
      assert.equal(json.results[0][0][0], String(scores.indexOf(Math.max(...scores))))
      const octets = await request(`${base}/v1/models/digits/versions/1:classify`, {body: digits[4]!.png, headers: {'Content-Type': 'application/octet-stream'}})
      assert.equal(octets.status, 200, octets.text)
    })

    it('rejects bad requests with the right 4xx and {"error": ...}', async () => {
      const predict = (body: unknown) => request(`${base}/v1/models/digits:predict`, {body: body as object})
      assertError(await predict({instances: [Array.from(floats[0]!)], inputs: [Array.from(floats[0]!)]}), 400, /exactly one of "instances".*or "inputs"/)
      assertError(await predict({}), 400, /exactly one of/)
      assertError(await predict({signature_name: 'other', instances: [Array.from(floats[0]!)]}), 400, /signature name: "other" not found/)
      assertError(await predict({instances: [Array.from(floats[0]!).slice(1)]}), 400, /783 values do not fit the model input \[28,28,1\]/)
      assertError(await predict({instances: [{b64: Buffer.from('hello').toString('base64')}]}), 400, /instances\[0\]: not a recognised image format/)
      assertError(await predict({instances: [{pixels: 1}]}), 400, /found keys "pixels"/)
      assertError(await predict({instances: 'x'}), 400, /must be a list/)
      assertError(await predict({inputs: {pixels: []}}), 400, /this model has one input, "image"/)
      assertError(await predict({instances: Array.from({length: 11}, () => Array.from(floats[0]!))}), 400, /over serve.maxBatchSize/)
      assertError(await request(`${base}/v1/models/digits:classify`, {body: {examples: 'x'}}), 400, /"examples" must be a list/)
      assertError(await request(`${base}/v1/models/digits:classify`, {body: {examples: [{a: 1, b: 2}]}}), 400, /must have an "image" feature/)
      assertError(await request(`${base}/v1/models/digits:regress`, {body: {examples: []}}), 400, /no regression signature/)
      assertError(await request(`${base}/v1/models/digits:explain`, {body: {}}), 404, /unknown method :explain/)
      assertError(await request(`${base}/v1/models/nope:predict`, {body: {instances: []}}), 404, /unknown model/)
      assertError(await request(`${base}/v1/models/digits/versions/4:predict`, {body: {instances: [Array.from(floats[0]!)]}}), 404, /version 4/)
      assertError(await request(`${base}/v1/models/digits:predict`, {body: digits[0]!.png, headers: {'Content-Type': 'image/png'}}), 415, /Content-Type image\/png/)
      assertError(await request(`${base}/v1/models/digits:classify`, {body: 'x', headers: {'Content-Type': 'application/xml'}}), 415)
      assertError(await request(`${base}/v1/models/digits:classify?top_k=0`, {body: digits[0]!.png, headers: {'Content-Type': 'image/png'}}), 400, /top_k/)
    })

    it('raw images: unsupported format 415, too large 413, damaged 400', async () => {
      const classify = (body: Buffer, type = 'image/png') => request(`${base}/v1/models/digits:classify`, {body, headers: {'Content-Type': type}})
      const bmp = Buffer.alloc(60)
      bmp.write('BM', 0, 'latin1')
      assertError(await classify(bmp, 'image/bmp'), 415, /BMP images are not supported/)
      assertError(await classify(Buffer.alloc(25_000, 1)), 413, /over the limit of 20000/)
      assertError(await classify(digits[0]!.png.subarray(0, 60)), 400, /could not be decoded/)
      assertError(await classify(Buffer.alloc(0)), 400, /empty/)
    })
  })

  describe('limits', () => {
    it('a body over serve.maxBodyBytes is refused with 413, declared or streamed', async () => {
      const big = Buffer.alloc(300 * 1024, 32)
      assertError(await request(`${base}/v2/models/digits/infer`, {body: big, headers: {'Content-Type': 'application/json'}}), 413, /maxBodyBytes/)
      // Chunked, no Content-Length: counted as it arrives.
      const http = await import('node:http')
      const result = await new Promise<{status: number; body: string}>((resolve, reject) => {
        const req = http.request(`${base}/v2/models/digits/infer`, {method: 'POST', headers: {'Content-Type': 'application/json'}}, (res) => {
          let body = ''
          res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({status: res.statusCode!, body}))
        })
        req.on('error', reject)
        for (let i = 0; i < 5; i++) req.write(Buffer.alloc(64 * 1024, 32))
        req.end()
      }).catch((error: NodeJS.ErrnoException) => ({status: 0, body: error.code ?? ''}))
      // The server answers 413 and closes; a client still writing may see the reset instead.
      assert.ok(result.status === 413 || result.body === 'ECONNRESET' || result.body === 'EPIPE', JSON.stringify(result))
      assert.equal((await request(`${base}/healthz`)).status, 200)
    })

    it('a client that never finishes its headers is disconnected (408)', async () => {
      const socket = net.connect(server.port, '127.0.0.1')
      await once(socket, 'connect')
      socket.write('POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n')
      let received = ''
      socket.setEncoding('utf8').on('data', (d: string) => (received += d))
      await once(socket, 'close')
      assert.match(received, /^HTTP\/1\.1 408/)
    })

    it('a client that never finishes its body is disconnected', async () => {
      const socket = net.connect(server.port, '127.0.0.1')
      await once(socket, 'connect')
      socket.write('POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"inputs"')
      let received = ''
      socket.setEncoding('utf8').on('data', (d: string) => (received += d))
      await once(socket, 'close')
      assert.match(received, /^HTTP\/1\.1 408/)
      assert.equal((await request(`${base}/healthz`)).status, 200)
    })
  })
})
