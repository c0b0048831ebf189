import assert from 'node:assert/strict'
import http from 'node:http'
import {after, before, describe, it} from 'node:test'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {serveOptions, type ServeOptions} from '../../../src/lib/serve/options.js'
import {startServer, type ServeHandle} from '../../../src/lib/serve/server.js'
import {tempDir} from '../../support/fixtures.js'
import {seededRandom} from '../../support/random.js'
import {captureLog, heldRequest, request, testDigits, trainServeModel, type CapturedLog, type ServeModel} from '../../support/serve-fixtures.js'
import {families, sample} from '../../support/serve-metrics.js'

const KEY = 'digits/1'

/** The label values of `label` over the server's own samples (ml_serve_*, nv_*) in a Prometheus text. */
function labelValues(text: string, label: string): Set<string> {
  const lines = text.split('\n').filter((line) => line.startsWith('ml_serve_') || line.startsWith('nv_')).join('\n')
  return new Set([...lines.matchAll(new RegExp(`[{,]${label}="((?:[^"\\\\]|\\\\.)*)"`, 'g'))].map((m) => m[1]!))
}

/** `depth` arrays nested around one value. */
const nested = (depth: number, inner: string) => '['.repeat(depth) + inner + ']'.repeat(depth)

describe('serving under attack: bounded labels, depth, finite inputs, admission, client aborts', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let model: ServeModel
  let digitB64: string
  const servers: ServeHandle[] = []

  const start = async (fields: Partial<ServeOptions>, log: JsonLog = new JsonLog(undefined)) => {
    const server = await startServer(serveOptions({repository: model.repository, models: [{name: 'digits', labels: {}}], port: 0, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm', instances: 1, ...fields}), {log})
    servers.push(server)
    return server
  }
  const bytesBody = (data: unknown = [digitB64]) => JSON.stringify({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data}]})

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-serve-hardening-'))
    model = await trainServeModel(dir)
    digitB64 = (await testDigits(dir, 1))[4]!.png.toString('base64')
  })

  after(async () => {
    await Promise.all(servers.map((s) => s.close()))
    await cleanup?.()
  })

  describe('one server', () => {
    let server: ServeHandle
    let captured: CapturedLog

    before(async () => {
      captured = captureLog()
      server = await start({}, captured.log)
    })

    it('labels metrics with served models only: made-up names count as _unknown and add no series', async () => {
      const random = seededRandom(19)
      const name = () => encodeURIComponent(Array.from({length: 300}, () => String.fromCharCode(Math.floor(random() * 0xd000))).join('') + '\0')
      const before = await request(`${server.url}/metrics`)
      for (let i = 0; i < 20; i++) {
        const made = name()
        await request(`${server.url}/v2/models/${made}`)
        await request(`${server.url}/v2/models/${made}/ready`)
        await request(`${server.url}/v2/models/${made}/versions/${i + 7}/infer`, {body: bytesBody()})
        await request(`${server.url}/v1/models/${made}:predict`, {body: {instances: [{b64: digitB64}]}})
        await request(`${server.url}/v2/models/digits/versions/${i + 2}`)
      }
      const after = await request(`${server.url}/metrics`)
      assert.deepEqual([...labelValues(after.text, 'model')].filter((m) => m !== 'digits' && m !== '' && m !== '_unknown'), [])
      assert.deepEqual([...labelValues(after.text, 'version')].filter((v) => v !== '1' && v !== '' && v !== '_unknown'), [])
      assert.ok(sample(after.text, 'ml_serve_requests_total', {model: '_unknown'}) >= 80)
      assert.ok(sample(after.text, 'nv_inference_request_failure', {model: '_unknown'}) >= 40, 'failed inference requests still count')
      assert.ok(after.text.length < before.text.length + 20_000, `/metrics grew from ${before.text.length} to ${after.text.length} bytes`)
    })

    it('answers JSON nested past serve.maxJsonDepth with 400 naming the limit, in every protocol, logging no error', async () => {
      const deep = 100_000
      const cases = [
        {url: '/v2/models/digits/infer', body: `{"inputs":[{"name":"image","shape":[1,28,28,1],"datatype":"FP32","data":${nested(deep, '0')}}]}`},
        {url: '/v2/models/digits/infer', body: bytesBody(JSON.parse(nested(40, JSON.stringify(digitB64))))},
        {url: '/v1/models/digits:predict', body: `{"instances":${nested(deep, '1')}}`},
        {url: '/v1/models/digits:classify', body: `{"examples":[{"image":${nested(deep, '{"b64":"AA=="}')}}]}`},
        {url: '/v1/models/digits:predict', body: `{"instances":[${'{"image":'.repeat(5000)}1${'}'.repeat(5000)}]}`},
      ]
      for (const {url, body} of cases) {
        const result = await request(server.url + url, {body, headers: {'Content-Type': 'application/json'}})
        assert.equal(result.status, 400, `${url}: ${result.text.slice(0, 200)}`)
        assert.match(result.json.error, /nested deeper than serve\.maxJsonDepth \(32 levels/)
      }
      // Ordinary nesting (a nested FP32 image, depth 7) is well within the limit.
      const image = Array.from({length: 28}, () => Array.from({length: 28}, () => [0.5]))
      assert.equal((await request(`${server.url}/v2/models/digits/infer`, {body: {inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', data: [image]}]}})).status, 200)
      assert.deepEqual(captured.events.filter((e) => e.level === 'error'), [])
    })

    it('refuses NaN and Infinity in FP32 inputs (JSON and binary) with 400 naming the input', async () => {
      const values = (bad: string) => `[${Array.from({length: 784}, (_, i) => (i === 100 ? bad : '0.5')).join(',')}]`
      for (const bad of ['1e999', '-1e999', '1e39']) {
        const kserve = await request(`${server.url}/v2/models/digits/infer`, {body: `{"inputs":[{"name":"image","shape":[1,28,28,1],"datatype":"FP32","data":${values(bad)}}]}`})
        assert.equal(kserve.status, 400, kserve.text)
        assert.match(kserve.json.error, /input "image" data: value -?Infinity|input "image" data: value 1e\+39/)
        assert.match(kserve.json.error, /not a finite 32-bit float/)
        const tf = await request(`${server.url}/v1/models/digits:predict`, {body: `{"instances":[${values(bad)}]}`})
        assert.equal(tf.status, 400, tf.text)
        assert.match(tf.json.error, /^instances\[0\]: value .* not a finite 32-bit float/)
      }
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const floats = new Float32Array(784).fill(0.5)
        floats[300] = bad
        const head = Buffer.from(JSON.stringify({inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', parameters: {binary_data_size: 784 * 4}}]}))
        const result = await request(`${server.url}/v2/models/digits/infer`, {
          body: Buffer.concat([head, Buffer.from(floats.buffer)]),
          headers: {'Content-Type': 'application/octet-stream', 'Inference-Header-Content-Length': String(head.length)},
        })
        assert.equal(result.status, 400, result.text)
        assert.match(result.json.error, new RegExp(`input "image" binary data: element 300 is ${bad}`))
      }
    })

    it('logs a client that leaves mid-body at info as client-aborted, and counts it', async () => {
      const before = await request(`${server.url}/metrics`)
      const req = http.request(`${server.url}/v2/models/digits/infer`, {method: 'POST', agent: false, headers: {'Content-Type': 'application/json', 'Content-Length': 10_000}})
      req.on('error', () => {})
      req.write('{"inputs": [')
      req.flushHeaders()
      // The server has the request once it counts it in flight (this scrape is the other one).
      for (let scrape = 0; sample((await request(`${server.url}/metrics`)).text, 'ml_serve_in_flight_requests') < 2; scrape++) assert.ok(scrape < 1000)
      req.destroy()
      const event = await captured.waitFor((e) => e.event === 'client-aborted' || e.event === 'request-failed')
      assert.equal(event.event, 'client-aborted')
      assert.equal(event.level, 'info')
      assert.equal(event.path, '/v2/models/digits/infer')
      const text = (await request(`${server.url}/metrics`)).text
      assert.ok(families(text).has('ml_serve_client_aborts_total'))
      assert.equal(sample(text, 'ml_serve_client_aborts_total', {protocol: 'kserve'}) - (sample(before.text, 'ml_serve_client_aborts_total', {protocol: 'kserve'}) || 0), 1)
      assert.deepEqual(captured.events.filter((e) => e.level === 'error'), [])
    })
  })

  it('with auth on, the open readiness endpoint answers anonymous callers by status code alone', async () => {
    process.env.ML_TEST_HARDENING_TOKEN = 'hardening-token'
    const server = await start({auth: {tokenEnv: 'ML_TEST_HARDENING_TOKEN'}})
    assert.equal((await request(`${server.url}/v2/models/digits/ready`)).status, 200)
    const anonymous = await request(`${server.url}/v2/models/nope/ready`)
    assert.equal(anonymous.status, 404)
    assert.equal(anonymous.text, '', 'no body, so no list of served models')
    const failed = await request(`${server.url}/v2/models/digits/versions/3/ready`)
    assert.equal(failed.status, 400)
    assert.equal(failed.text, '')
    const authorised = await request(`${server.url}/v2/models/nope/ready`, {headers: {Authorization: 'Bearer hardening-token'}})
    assert.match(authorised.json.error, /served: digits/)
    const metrics = (await request(`${server.url}/metrics`, {headers: {Authorization: 'Bearer hardening-token'}})).text
    assert.ok(!labelValues(metrics, 'model').has('nope'))
  })

  it('decides admission from the headers: a full queue sheds a request before its body arrives (503 + Retry-After)', {timeout: 60_000}, async () => {
    const server = await start({maxQueueSize: 2})
    server.scheduler.pause()
    const queued = [0, 1].map(() => request(`${server.url}/v2/models/digits/infer`, {body: bytesBody(), agent: false}))
    while (server.scheduler.depth(KEY) < 2) await new Promise((resolve) => server.scheduler.once('enqueued', resolve))
    // Only the headers and 100 bytes are sent: the answer must not wait for the rest.
    const held = heldRequest(`${server.url}/v2/models/digits/infer`, bytesBody())
    const shed = await held.response
    assert.equal(shed.status, 503)
    assert.equal(shed.headers['retry-after'], '1')
    assert.match(shed.json.error, /queue of digits version 1 is full \(2 images\)/)
    held.finish()
    server.scheduler.resume()
    assert.deepEqual((await Promise.all(queued)).map((r) => r.status), [200, 200])
  })

  it('bounds the bytes of bodies being read or decoded (serve.maxInFlightBytes): 503 before reading the next', {timeout: 60_000}, async () => {
    const server = await start({maxInFlightBytes: 6000})
    const padded = bytesBody().padEnd(4000, ' ')
    const first = heldRequest(`${server.url}/v2/models/digits/infer`, padded)
    // Admitted once the server counts it in flight (admission runs as the request arrives).
    while (server.inFlight() < 1) await request(`${server.url}/healthz`)
    const second = heldRequest(`${server.url}/v2/models/digits/infer`, padded)
    const refused = await second.response
    assert.equal(refused.status, 503)
    assert.match(refused.json.error, /serve\.maxInFlightBytes \(6000\)/)
    second.finish()
    first.finish()
    assert.equal((await first.response).status, 200)
    // Its bytes are released: the next request is taken.
    assert.equal((await request(`${server.url}/v2/models/digits/infer`, {body: padded, headers: {'Content-Type': 'application/json'}})).status, 200)
  })
})
