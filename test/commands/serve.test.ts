import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import http from 'node:http'
import {createServer} from 'node:net'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {execFile} from 'node:child_process'
import {promisify} from 'node:util'
import {runJson} from '../support/cli.js'
import {tempDir} from '../support/fixtures.js'
import {request, startServe, testDigits, trainServeModel, type ServeChild, type ServeModel} from '../support/serve-fixtures.js'
import {sample} from '../support/serve-metrics.js'

/** The fields of `ml serve --json`, as the README lists them, whatever the number of processes. */
const SUMMARY_FIELDS = ['url', 'port', 'processes', 'instances', 'requests', 'restarts', 'signal', 'uptimeSeconds']

/** Settles with the response, 'closed' when the connection was cut, or 'hung' after `ms`. */
function bounded<T>(response: Promise<T>, ms: number): Promise<T | 'closed' | 'hung'> {
  let timer: NodeJS.Timeout | undefined
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)))
  return Promise.race([response.catch(() => 'closed' as const), hung]).finally(() => clearTimeout(timer))
}

describe('ml serve (the CLI, as a child process)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let model: ServeModel
  let body: string
  const children: ServeChild[] = []

  const serve = async (args: string[], options: {cwd?: string; env?: NodeJS.ProcessEnv} = {}) => {
    const child = await startServe(args, {cwd: dir, ...options})
    children.push(child)
    return child
  }

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-serve-cli-'))
    model = await trainServeModel(dir, {serve: {instances: 1, maxBatchSize: 16, pollIntervalMs: 0, accessLog: 'access.log'}})
    const digit = (await testDigits(dir, 1))[2]!
    body = JSON.stringify({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [digit.png.toString('base64')]}]})
  })

  after(async () => {
    for (const child of children) if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL')
    await Promise.all(children.map((c) => c.done))
    await cleanup?.()
  })

  it('serves what `ml export` wrote for the config; SIGTERM lets in-flight requests finish, then exits 0', async () => {
    const server = await serve(['--config', model.config, '--json'], {env: {ML_PORT: '0'}})
    assert.ok(server.port > 0)
    assert.equal((await request(`${server.url}/v2/models/digits/ready`)).status, 200)
    // Requests whose bodies are still arriving when SIGTERM comes: the server must wait for them.
    const slow = Array.from({length: 6}, () => {
      const req = http.request(`${server.url}/v2/models/digits/infer`, {method: 'POST', headers: {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body)}})
      const response = new Promise<{status: number; json: any}>((resolve, reject) => {
        req.on('response', (res) => {
          let text = ''
          res.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => resolve({status: res.statusCode!, json: JSON.parse(text)}))
        })
        req.on('error', reject)
      })
      req.write(body.slice(0, 100))
      return {req, response}
    })
    // All six are in flight once the gauge (plus this scrape) says so.
    for (let scrape = 0; ; scrape++) {
      assert.ok(scrape < 1000, 'the slow requests never showed up as in flight')
      if (sample((await request(`${server.url}/metrics`)).text, 'ml_serve_in_flight_requests') >= 7) break
    }
    server.child.kill('SIGTERM')
    const draining = await server.waitForEvent((e) => e.event === 'draining')
    assert.equal(draining.inFlight, 6)
    for (const {req} of slow) req.end(body.slice(100))
    const responses = await Promise.all(slow.map((s) => s.response))
    assert.deepEqual(responses.map((r) => r.status), [200, 200, 200, 200, 200, 200])
    assert.ok(responses.every((r) => r.json.outputs[0].shape.join() === '1,10'))
    const result = await server.done
    assert.equal(result.code, 0, result.stderr)
    const summary = JSON.parse(result.stdout)
    assert.deepEqual(Object.keys(summary), SUMMARY_FIELDS)
    assert.equal(summary.restarts, 0)
    assert.equal(summary.signal, 'SIGTERM')
    assert.equal(summary.port, server.port)
    assert.ok(summary.requests >= 7)
    const log = (await readFile(path.join(dir, 'access.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l))
    assert.equal(log.filter((l) => l.path === '/v2/models/digits/infer' && l.status === 200).length, 6)
  })

  it('serve.processes: a killed server process is replaced and the port keeps answering', async () => {
    const server = await serve(['--config', model.config, '--port', '0', '--processes', '2', '--json'])
    const started = [await server.waitForEvent((e) => e.event === 'process-started' && e.worker === 1), await server.waitForEvent((e) => e.event === 'process-started' && e.worker === 2)]
    const pids = started.map((e) => e.workerPid as number)
    const infer = () => request(`${server.url}/v2/models/digits/infer`, {body, headers: {'Content-Type': 'application/json'}, agent: false})
    assert.deepEqual((await Promise.all(Array.from({length: 6}, infer))).map((r) => r.status), Array(6).fill(200))
    process.kill(pids[0]!, 'SIGKILL')
    await server.waitForEvent((e) => e.event === 'process-died' && e.workerPid === pids[0])
    for (let i = 0; i < 10; i++) assert.equal((await infer()).status, 200, 'the surviving process answers')
    const replacement = await server.waitForEvent((e) => e.event === 'process-started' && !pids.includes(e.workerPid as number))
    assert.ok(replacement.workerPid)
    assert.deepEqual((await Promise.all(Array.from({length: 6}, infer))).map((r) => r.status), Array(6).fill(200))
    // Metrics are summed over the processes alive now, through the primary.
    const text = (await request(`${server.url}/metrics`)).text
    assert.equal(sample(text, 'ml_serve_process_restarts_total'), 1)
    assert.ok(sample(text, 'ml_serve_requests_total', {model: 'digits', protocol: 'kserve', status: '200'}) >= 6)
    assert.equal(sample(text, 'ml_serve_model_ready', {model: 'digits', version: '1'}), 2, 'one ready gauge per process, summed')
    server.child.kill('SIGTERM')
    const result = await server.done
    assert.equal(result.code, 0, result.stderr)
    // The same summary as one process: requests received by the processes that drained, and the restarts.
    const summary = JSON.parse(result.stdout)
    assert.deepEqual(Object.keys(summary), SUMMARY_FIELDS)
    assert.equal(summary.processes, 2)
    assert.equal(summary.restarts, 1)
    assert.ok(summary.requests >= 7, `requests ${summary.requests}`)
  })

  it('serve.processes: connections a process held when it was SIGKILLed are answered or closed, never left hanging', async () => {
    const server = await serve(['--config', model.config, '--port', '0', '--processes', '2'])
    const pids = await Promise.all([1, 2].map(async (worker) => (await server.waitForEvent((e) => e.event === 'process-started' && e.worker === worker)).workerPid as number))
    const infer = () => request(`${server.url}/v2/models/digits/infer`, {body, headers: {'Content-Type': 'application/json'}, agent: false})
    // A stopped process takes nothing from here on, as one dying under load: every new connection must
    // still be answered by the other, or closed, and none may wait past serve.requestTimeoutMs (10 s).
    process.kill(pids[0]!, 'SIGSTOP')
    const during = Array.from({length: 8}, () => bounded(infer(), 15_000))
    const answered = await Promise.all(during)
    process.kill(pids[0]!, 'SIGKILL')
    await server.waitForEvent((e) => e.event === 'process-died' && e.workerPid === pids[0])
    const outcomes = answered.map((r) => (typeof r === 'string' ? r : r.status))
    assert.ok(!outcomes.includes('hung'), `outcomes: ${outcomes.join(', ')}`)
    assert.ok(outcomes.every((o) => o === 200 || o === 503 || o === 'closed'), `outcomes: ${outcomes.join(', ')}`)
    const after = await Promise.all(Array.from({length: 4}, () => bounded(infer(), 15_000)))
    assert.deepEqual(after.map((r) => (typeof r === 'string' ? r : r.status)), [200, 200, 200, 200])
    server.child.kill('SIGTERM')
    assert.equal((await server.done).code, 0)
  })

  it('serve.processes: exits at once after the drain, even with a replacement process pending (backed off)', async () => {
    const server = await serve(['--config', model.config, '--port', '0', '--processes', '2'])
    await Promise.all([1, 2].map((worker) => server.waitForEvent((e) => e.event === 'process-started' && e.worker === worker)))
    // Server processes that keep dying are replaced more and more slowly: kill each as it appears
    // until the next replacement is seconds away.
    const killed = new Set<number>()
    let died: Record<string, unknown> | undefined
    while (died === undefined) {
      const {stdout} = await promisify(execFile)('pgrep', ['-P', String(server.child.pid)]).catch(() => ({stdout: ''}))
      for (const pid of stdout.split('\n').filter(Boolean).map(Number)) {
        if (killed.has(pid)) continue
        killed.add(pid)
        process.kill(pid, 'SIGKILL')
      }
      died = server.stderr().split('\n').filter((l) => l.includes('"process-died"')).map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => (e.restartInMs as number) >= 4000)
    }
    const diedAt = Date.parse(died.time as string)
    server.child.kill('SIGTERM')
    const result = await server.done
    const exitedAt = Date.now()
    assert.equal(result.code, 0, result.stderr)
    assert.ok(exitedAt < diedAt + (died.restartInMs as number), `exited ${exitedAt - diedAt} ms after the last death; the pending replacement was due after ${died.restartInMs as number} ms`)
  })

  it('serves a bare repository without a config file (--repository, --model)', async () => {
    const empty = path.join(dir, 'data', 'train', '0')
    const server = await serve(['--repository', model.repository, '--model', 'digits', '--port', '0', '--instances', '1'], {cwd: empty})
    const result = await request(`${server.url}/v1/models/digits`)
    assert.equal(result.json.model_version_status[0].state, 'AVAILABLE')
    server.child.kill('SIGTERM')
    assert.equal((await server.done).code, 0)
  })

  it('fails clearly when there is nothing to serve or the port is taken', async () => {
    const missing = await runJson<{error: {code: string; message: string}}>(['serve', '--config', model.config, '--model', 'nothing', '--port', '0'], {cwd: dir})
    assert.equal(missing.code, 3)
    assert.equal(missing.json.error.code, 'SERVE_NO_MODEL')
    assert.match(missing.json.error.message, /nothing: no version folders/)
    const blocker = createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    try {
      const port = (blocker.address() as {port: number}).port
      const taken = await runJson<{error: {code: string; message: string}}>(['serve', '--config', model.config, '--port', String(port)], {cwd: dir})
      assert.equal(taken.code, 2)
      assert.equal(taken.json.error.code, 'SERVE_LISTEN')
      assert.match(taken.json.error.message, /port is in use/)
    } finally {
      blocker.close()
    }
  })
})
