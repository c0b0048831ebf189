import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import {once} from 'node:events'
import {readFile} from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {promisify} from 'node:util'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {serveOptions, type ServeOptions} from '../../../src/lib/serve/options.js'
import {preprocessImage, type Preprocessing} from '../../../src/lib/serve/predictor.js'
import {startServer, type ServeHandle} from '../../../src/lib/serve/server.js'
import {readJson} from '../../../src/lib/storage/index.js'
import {tempDir} from '../../support/fixtures.js'
import {fp32Body, request, testDigits, trainServeModel, type HttpResult, type ServeModel} from '../../support/serve-fixtures.js'
import {families, sample} from '../../support/serve-metrics.js'

const KEY = 'digits/1'

/** Resolves once the scheduler holds `depth` queued images for the model. */
async function queued(server: ServeHandle, depth: number): Promise<void> {
  while (server.scheduler.depth(KEY) < depth) await once(server.scheduler, 'enqueued')
}

async function metricsText(server: ServeHandle): Promise<string> {
  const result = await request(`${server.url}/metrics`)
  assert.equal(result.status, 200)
  return result.text
}

describe('serving operations: batching, shedding, timeouts, metrics, logs, auth, TLS, drain', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let model: ServeModel
  let image: Float32Array
  let png: Buffer
  const servers: ServeHandle[] = []

  const start = async (fields: Partial<ServeOptions>) => {
    const server = await startServer(serveOptions({repository: model.repository, models: [{name: 'digits', labels: {}}], port: 0, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm', ...fields}), {log: new JsonLog(undefined)})
    servers.push(server)
    return server
  }

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-serve-ops-'))
    model = await trainServeModel(dir)
    const digit = (await testDigits(dir, 1))[7]!
    png = digit.png
    image = await preprocessImage(png, await readJson<Preprocessing>(path.join(model.versionDir, 'preprocessing.json')), 'digit')
  })

  after(async () => {
    await Promise.all(servers.map((s) => s.close()))
    await cleanup?.()
  })

  describe('a batching server', () => {
    let server: ServeHandle
    let accessLog: string
    const infer = () => request(`${server.url}/v2/models/digits/infer`, {body: fp32Body([image])})

    before(async () => {
      accessLog = path.join(dir, 'logs', 'access.log')
      server = await start({instances: 2, maxBatchSize: 8, maxQueueSize: 6, maxQueueDelayMs: 2, accessLog})
    })

    it('groups concurrent requests into one batch (the batch-size histogram shows it)', async () => {
      const before = await metricsText(server)
      server.scheduler.pause()
      const requests = Array.from({length: 6}, infer)
      await queued(server, 6)
      server.scheduler.resume()
      const results = await Promise.all(requests)
      assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200, 200])
      const text = await metricsText(server)
      const labels = {model: 'digits', version: '1'}
      assert.equal(sample(text, 'ml_serve_batch_size_count', labels) - (sample(before, 'ml_serve_batch_size_count', labels) || 0), 1, 'six requests, one batch')
      assert.equal(sample(text, 'ml_serve_batch_size_sum', labels) - (sample(before, 'ml_serve_batch_size_sum', labels) || 0), 6)
      assert.equal(sample(text, 'ml_serve_batch_size_bucket', {...labels, le: '4'}) - (sample(before, 'ml_serve_batch_size_bucket', {...labels, le: '4'}) || 0), 0)
      assert.equal(sample(text, 'nv_inference_exec_count', labels) - (sample(before, 'nv_inference_exec_count', labels) || 0), 1)
      assert.equal(sample(text, 'nv_inference_count', labels) - (sample(before, 'nv_inference_count', labels) || 0), 6)
    })

    it('sheds load past maxQueueSize with 503 and Retry-After, and serves what it queued', async () => {
      server.scheduler.pause()
      const accepted = Array.from({length: 6}, infer)
      await queued(server, 6)
      const refused = await infer()
      assert.equal(refused.status, 503)
      assert.equal(refused.headers['retry-after'], '1')
      assert.match(refused.json.error, /queue of digits version 1 is full \(6 images\)/)
      server.scheduler.resume()
      assert.deepEqual((await Promise.all(accepted)).map((r) => r.status), [200, 200, 200, 200, 200, 200])
      assert.equal(sample(await metricsText(server), 'ml_serve_requests_total', {model: 'digits', protocol: 'kserve', status: '503'}), 1)
    })

    it('drops the queued work of a client that disconnects', async () => {
      const execs = sample(await metricsText(server), 'nv_inference_exec_count', {model: 'digits'})
      server.scheduler.pause()
      const req = http.request(`${server.url}/v2/models/digits/infer`, {method: 'POST', headers: {'Content-Type': 'application/json'}})
      req.on('error', () => {})
      req.end(JSON.stringify(fp32Body([image])))
      await queued(server, 1)
      const cancelled = once(server.scheduler, 'cancelled')
      req.destroy()
      await cancelled
      assert.equal(server.scheduler.depth(KEY), 0)
      server.scheduler.resume()
      await server.scheduler.drain()
      assert.equal(sample(await metricsText(server), 'nv_inference_exec_count', {model: 'digits'}), execs, 'nothing was computed for it')
    })

    it('replaces a model instance that dies, and keeps answering', async () => {
      const replaced = once(server.pool, 'replaced')
      await server.pool.crash(0)
      const during = await Promise.all(Array.from({length: 4}, infer))
      assert.deepEqual(during.map((r) => r.status), [200, 200, 200, 200], 'the other instance serves meanwhile')
      await replaced
      // No more at once than maxQueueSize (6): a burst may wait in the queue whole.
      const results = await Promise.all(Array.from({length: 6}, infer))
      assert.deepEqual(results.map((r) => r.status), Array(6).fill(200))
      assert.equal(sample(await metricsText(server), 'ml_serve_instance_restarts_total'), 1)
    })

    it('exposes Prometheus metrics: requests, latency histograms, batches, queue, loads, process, Triton names', async () => {
      await infer()
      await request(`${server.url}/v2/models/digits/infer`, {body: {inputs: []}})
      const result = await request(`${server.url}/metrics`)
      assert.match(result.headers['content-type']!, /^text\/plain/)
      const names = families(result.text)
      for (const name of [
        'ml_serve_requests_total', 'ml_serve_request_duration_seconds', 'ml_serve_queue_duration_seconds', 'ml_serve_inference_duration_seconds',
        'ml_serve_batch_size', 'ml_serve_in_flight_requests', 'ml_serve_queue_depth', 'ml_serve_model_loads_total', 'ml_serve_model_ready',
        'process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes',
        'nv_inference_request_success', 'nv_inference_request_failure', 'nv_inference_count', 'nv_inference_exec_count',
        'nv_inference_request_duration_us', 'nv_inference_queue_duration_us', 'nv_inference_compute_infer_duration_us',
      ]) assert.ok(names.has(name), `${name} is missing`)
      const text = result.text
      assert.match(text, /# TYPE ml_serve_request_duration_seconds histogram/)
      assert.ok(sample(text, 'ml_serve_request_duration_seconds_bucket', {model: 'digits', protocol: 'kserve', le: '+Inf'}) > 0)
      assert.ok(sample(text, 'ml_serve_queue_duration_seconds_count', {model: 'digits'}) > 0)
      assert.ok(sample(text, 'ml_serve_inference_duration_seconds_count', {model: 'digits'}) > 0)
      assert.ok(sample(text, 'nv_inference_request_success', {model: 'digits', version: '1'}) >= 20)
      assert.ok(sample(text, 'nv_inference_request_failure', {model: 'digits'}) >= 2, 'the 503 and the 400 count as failures')
      assert.ok(sample(text, 'nv_inference_compute_infer_duration_us', {model: 'digits'}) > 0)
      assert.equal(sample(text, 'ml_serve_model_loads_total', {model: 'digits', version: '1', result: 'success'}), 1)
      assert.equal(sample(text, 'ml_serve_model_ready', {model: 'digits', version: '1'}), 1)
      assert.equal(sample(text, 'ml_serve_in_flight_requests'), 1, 'the scrape itself')
      assert.equal(sample(text, 'ml_serve_queue_depth', {model: 'digits'}), 0)
    })

    it('writes one JSON access-log line per request', async () => {
      const marker = await request(`${server.url}/v2/models/digits/infer?marker`, {body: fp32Body([image])})
      assert.equal(marker.status, 200)
      await request(`${server.url}/v2/models/nope`)
      // The log is a stream: wait until both lines are on disk.
      let lines: Array<Record<string, unknown>> = []
      for (let attempt = 0; attempt < 200; attempt++) {
        lines = (await readFile(accessLog, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
        if (lines.some((l) => l.path === '/v2/models/nope')) break
        await new Promise((resolve) => setImmediate(resolve))
      }
      // The marker request is the last inference so far, and ran alone.
      const line = lines.findLast((l) => l.path === '/v2/models/digits/infer' && l.status === 200)!
      assert.deepEqual(Object.keys(line).slice(0, 8), ['time', 'method', 'path', 'status', 'ms', 'model', 'version', 'bytes'])
      assert.equal(line.method, 'POST')
      assert.equal(line.model, 'digits')
      assert.equal(line.version, '1')
      assert.equal(line.bytes, Buffer.byteLength(marker.text))
      assert.ok(typeof line.ms === 'number' && line.ms > 0)
      assert.ok(!Number.isNaN(Date.parse(line.time as string)))
      // Where the inference request's time went: queued, computing, and the batch it ran in.
      assert.equal(line.batch, 1)
      assert.ok(typeof line.queueMs === 'number' && line.queueMs >= 0)
      assert.ok(typeof line.computeMs === 'number' && line.computeMs > 0)
      assert.ok((line.queueMs as number) + (line.computeMs as number) <= (line.ms as number))
      const missing = lines.find((l) => l.path === '/v2/models/nope')!
      assert.equal(missing.status, 404)
      assert.equal(missing.model, 'nope')
      assert.equal(missing.computeMs, undefined, 'no timing on a request that ran no model')
      assert.equal(lines.length, server.handled() - 0, 'one line per request so far')
    })

    it('on close: readiness turns false, queued and in-flight requests complete, then it stops', async () => {
      server.scheduler.pause()
      const pending = Array.from({length: 5}, infer)
      await queued(server, 5)
      const closing = server.close()
      assert.equal(server.ready(), false)
      let closed = false
      void closing.then(() => (closed = true))
      await new Promise((resolve) => setImmediate(resolve))
      assert.equal(closed, false, 'it waits for the queued requests')
      server.scheduler.resume()
      const results = await Promise.all(pending)
      assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200])
      assert.ok(results.every((r) => r.headers.connection === 'close'))
      await closing
      await assert.rejects(request(`${server.url}/healthz`), /ECONNREFUSED/)
    })
  })

  it('answers 504 when a request waits past requestTimeoutMs, and never computes it', async () => {
    const server = await start({instances: 1, requestTimeoutMs: 300})
    server.scheduler.pause()
    const result = await request(`${server.url}/v2/models/digits/infer`, {body: fp32Body([image])})
    assert.equal(result.status, 504)
    assert.match(result.json.error, /requestTimeoutMs/)
    assert.equal(server.scheduler.depth(KEY), 0)
    server.scheduler.resume()
    await server.scheduler.drain()
    const text = await metricsText(server)
    assert.ok(Number.isNaN(sample(text, 'nv_inference_exec_count', {model: 'digits'})) || sample(text, 'nv_inference_exec_count', {model: 'digits'}) === 0)
    assert.equal(sample(text, 'nv_inference_request_failure', {model: 'digits'}), 1)
  })

  describe('bearer-token auth over TLS', () => {
    let server: ServeHandle
    let ca: Buffer | undefined
    const token = `t-${process.pid}-${Date.now()}`
    let tlsSkip: string | undefined

    before(async () => {
      const cert = path.join(dir, 'cert.pem')
      const key = path.join(dir, 'key.pem')
      try {
        await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'])
        ca = await readFile(cert)
      } catch (error) {
        tlsSkip = `openssl could not make a self-signed certificate (${(error as Error).message.split('\n')[0]}): auth is tested over plain HTTP`
      }
      process.env.ML_TEST_SERVE_TOKEN = token
      server = await start({instances: 1, auth: {tokenEnv: 'ML_TEST_SERVE_TOKEN'}, tls: ca ? {cert, key} : undefined})
    })

    const call = (url: string, headers: Record<string, string> = {}, body?: object): Promise<HttpResult> => request(server.url + url, {headers, body, ca})

    it('serves HTTPS with the configured certificate', (t) => {
      if (tlsSkip) {
        t.skip(tlsSkip)
        return
      }
      assert.match(server.url, /^https:\/\//)
    })

    it('refuses requests without the right bearer token (401 + WWW-Authenticate)', async () => {
      const missing = await call('/v2/models/digits/infer', {}, fp32Body([image]))
      assert.equal(missing.status, 401)
      assert.equal(missing.headers['www-authenticate'], 'Bearer realm="ml"')
      assert.match(missing.json.error, /bearer token is required/)
      const wrong = await call('/v1/models/digits', {Authorization: 'Bearer nope'})
      assert.equal(wrong.status, 401)
      assert.equal(wrong.headers['www-authenticate'], 'Bearer realm="ml", error="invalid_token"')
      assert.equal((await call('/metrics', {Authorization: 'Basic eDp5'})).status, 401)
    })

    it('accepts the token, and leaves health checks open', async () => {
      const ok = await call('/v2/models/digits/infer', {Authorization: `Bearer ${token}`}, fp32Body([image]))
      assert.equal(ok.status, 200, ok.text)
      for (const url of ['/healthz', '/readyz', '/v2/health/live', '/v2/health/ready', '/v2/models/digits/ready']) assert.equal((await call(url)).status, 200, url)
    })

    it('refuses to start when the token variable is unset', async () => {
      await assert.rejects(start({instances: 1, auth: {tokenEnv: 'ML_TEST_SERVE_TOKEN_UNSET'}}), /ML_TEST_SERVE_TOKEN_UNSET, which is not set/)
    })
  })
})
