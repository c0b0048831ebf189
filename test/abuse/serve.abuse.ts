// `npm run test:abuse`: `ml serve` as an attacker and a traffic spike see it. A seeded fuzz of every
// endpoint (no 5xx, no crash, /metrics and memory bounded over three rounds), an overload at four
// times the saturating request rate (the served rate holds), and SIGKILL of a server process under
// load (no request waits past the timeout). Slow: kept out of `npm test`.
import assert from 'node:assert/strict'
import {EventEmitter, once} from 'node:events'
import http from 'node:http'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import autocannon from 'autocannon'
import {tempDir} from '../support/fixtures.js'
import {seededRandom} from '../support/random.js'
import {setServeConfig, startServe, testDigits, trainServeModel, type ServeChild, type ServeModel} from '../support/serve-fixtures.js'
import {sample} from '../support/serve-metrics.js'
import {copyFile} from 'node:fs/promises'
import {fuzzRequest, send, slowSender} from './fuzz.js'

async function metrics(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(`${url}/metrics`, {agent: false}, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => resolve(text))
    }).on('error', reject)
  })
}

describe('ml serve under abuse (npm run test:abuse)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let model: ServeModel
  let digit: string
  let digitBody: string
  const children: ServeChild[] = []

  const serve = async (config: string, args: string[] = []) => {
    const child = await startServe(['--config', config, '--port', '0', ...args], {cwd: dir})
    children.push(child)
    return child
  }
  const withServe = async (name: string, serveConfig: Record<string, unknown>) => {
    const config = path.join(dir, `${name}.yaml`)
    await copyFile(model.config, config)
    await setServeConfig(config, {pollIntervalMs: 0, accessLog: 'off', ...serveConfig})
    return config
  }

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-serve-abuse-'))
    model = await trainServeModel(dir)
    digit = (await testDigits(dir, 1))[6]!.png.toString('base64')
    digitBody = JSON.stringify({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [digit]}]})
  })

  after(async () => {
    for (const child of children) if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL')
    await Promise.all(children.map((c) => c.done))
    await cleanup?.()
  })

  it('fuzz: 5,400 seeded malformed requests to every endpoint, 20 slow senders: no 5xx, no crash, /metrics and memory bounded', async () => {
    const config = await withServe('fuzz', {instances: 1, maxBatchSize: 8, maxBodyBytes: 256 * 1024, clientTimeoutMs: 1500, requestTimeoutMs: 5000})
    const server = await serve(config)
    const random = seededRandom(1919)
    const agent = new http.Agent({keepAlive: true, maxSockets: 16})
    const rounds: Array<{rss: number; heap: number; metricsBytes: number}> = []
    const statuses = new Map<string, number>()
    const failures: string[] = []
    for (let round = 0; round < 3; round++) {
      const requests = Array.from({length: 1800}, () => fuzzRequest(random, digit))
      let next = 0
      await Promise.all(Array.from({length: 16}, async () => {
        while (next < requests.length) {
          const r = requests[next++]!
          const outcome = await send(server.url, agent, r)
          const key = 'status' in outcome ? String(outcome.status) : `closed:${outcome.closed}`
          statuses.set(key, (statuses.get(key) ?? 0) + 1)
          if ('status' in outcome && outcome.status >= 500) failures.push(`${outcome.status} ${r.method} ${r.path.slice(0, 80)} (${r.kind})`)
        }
      }))
      const slow = await Promise.all(Array.from({length: round === 0 ? 20 : 0}, () => slowSender(server.port, random)))
      for (const line of slow) assert.ok(!/^HTTP\/1\.1 5/.test(line), `slow sender got ${line}`)
      const text = await metrics(server.url)
      rounds.push({rss: sample(text, 'process_resident_memory_bytes'), heap: sample(text, 'nodejs_heap_size_used_bytes'), metricsBytes: text.length})
    }
    agent.destroy()
    const mb = (bytes: number) => Math.round(bytes / 1e5) / 10
    console.log(JSON.stringify({statuses: Object.fromEntries([...statuses].sort()), rounds: rounds.map((r) => ({rssMB: mb(r.rss), heapMB: mb(r.heap), metricsKB: Math.round(r.metricsBytes / 1000)}))}))
    assert.deepEqual(failures, [], `${failures.length} answers >= 500`)
    assert.equal(server.child.exitCode, null, 'the server is still running')
    assert.ok(!server.stderr().includes('"request-failed"'), 'no request failed inside the server')
    assert.ok(!server.stderr().includes('"level":"error"'), 'nothing logged as an error')
    // Bounded: /metrics does not grow with made-up names, memory settles after the first round.
    assert.ok(rounds[2]!.metricsBytes < rounds[0]!.metricsBytes + 20_000, `/metrics ${rounds.map((r) => r.metricsBytes).join(' -> ')} bytes`)
    assert.ok(rounds[2]!.rss < rounds[0]!.rss + 96e6, `RSS ${rounds.map((r) => mb(r.rss)).join(' -> ')} MB`)
    assert.ok(rounds[2]!.heap < rounds[0]!.heap + 32e6, `heap ${rounds.map((r) => mb(r.heap)).join(' -> ')} MB`)
    server.child.kill('SIGTERM')
    assert.equal((await server.done).code, 0)
  })

  it('overload: at 4x the saturating request rate it still serves >= 0.8 of the saturated rate, shedding with 503', async () => {
    const config = await withServe('overload', {instances: 1, maxBatchSize: 16, maxQueueSize: 64})
    const server = await serve(config)
    const load = (options: Partial<autocannon.Options>) => autocannon({url: `${server.url}/v2/models/digits/infer`, method: 'POST', body: digitBody, headers: {'content-type': 'application/json'}, duration: 8, ...options})
    await load({connections: 8, duration: 2})
    const saturated = await load({connections: 32})
    const saturatedRate = saturated['2xx'] / 8
    const overloaded = await load({connections: 400, overallRate: Math.round(4 * saturatedRate)})
    const servedRate = overloaded['2xx'] / 8
    const shed = overloaded.non2xx
    const status = (await metrics(server.url))
    const summary = {saturatedRate: Math.round(saturatedRate), offeredRate: Math.round(4 * saturatedRate), servedRate: Math.round(servedRate), ratio: Math.round((servedRate / saturatedRate) * 100) / 100, shed, shed503: sample(status, 'ml_serve_requests_total', {status: '503'}), errors: overloaded.errors, timeouts: overloaded.timeouts}
    console.log(JSON.stringify(summary))
    assert.ok(summary.shed503 > 0, 'the overload was shed with 503')
    assert.equal(Number.isNaN(sample(status, 'ml_serve_requests_total', {status: '500'})) || sample(status, 'ml_serve_requests_total', {status: '500'}) === 0, true)
    assert.ok(servedRate >= 0.8 * saturatedRate, JSON.stringify(summary))
    server.child.kill('SIGTERM')
    assert.equal((await server.done).code, 0)
  })

  it('SIGKILL of a server process under load: every request is answered or closed within serve.requestTimeoutMs', async () => {
    const timeoutMs = 3000
    const config = await withServe('kill', {instances: 1, processes: 2, maxBatchSize: 16, requestTimeoutMs: timeoutMs})
    const server = await serve(config)
    const pids = await Promise.all([1, 2].map(async (worker) => (await server.waitForEvent((e) => e.event === 'process-started' && e.worker === worker)).workerPid as number))
    const waits: number[] = []
    const outcomes = new Map<string, number>()
    let stop = false
    const progress = new EventEmitter()
    const answered = async (count: number) => {
      const target = waits.length + count
      while (waits.length < target) await once(progress, 'done')
    }
    const clients = Array.from({length: 32}, async () => {
      while (!stop) {
        const started = performance.now()
        const outcome = await new Promise<string>((resolve) => {
          const req = http.request(`${server.url}/v2/models/digits/infer`, {method: 'POST', agent: false, headers: {'Content-Type': 'application/json'}}, (res) => {
            res.resume()
            res.on('end', () => resolve(String(res.statusCode)))
            res.on('error', () => resolve('closed'))
          })
          req.setTimeout(timeoutMs + 5000, () => {
            resolve('hung')
            req.destroy()
          })
          req.on('error', () => resolve('closed'))
          req.end(digitBody)
        })
        waits.push(performance.now() - started)
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
        progress.emit('done')
      }
    })
    // Kills while the load runs: each once the process has answered some requests.
    for (const pid of pids) {
      await answered(200)
      process.kill(pid, 'SIGKILL')
      await server.waitForEvent((e) => e.event === 'process-died' && e.workerPid === pid)
    }
    await answered(200)
    stop = true
    await Promise.all(clients)
    const longest = Math.max(...waits)
    console.log(JSON.stringify({requests: waits.length, outcomes: Object.fromEntries(outcomes), longestMs: Math.round(longest)}))
    assert.ok(!outcomes.has('hung'), `${outcomes.get('hung')} requests hung`)
    assert.ok(longest < timeoutMs + 2000, `a request waited ${Math.round(longest)} ms`)
    assert.ok([...outcomes.keys()].every((o) => o === '200' || o === '503' || o === 'closed'), JSON.stringify(Object.fromEntries(outcomes)))
    server.child.kill('SIGTERM')
    assert.equal((await server.done).code, 0)
  })
})
