import assert from 'node:assert/strict'
import {copyFile} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {setTimeout as sleep} from 'node:timers/promises'
import {tempDir} from '../../support/fixtures.js'
import {heldRequest, request, setServeConfig, startServe, testDigits, trainServeModel, type ServeChild, type ServeModel} from '../../support/serve-fixtures.js'
import {sample} from '../../support/serve-metrics.js'

// Long enough that the requests a test makes during the delay are all made well before it ends, even
// on a loaded machine; the tests wait on log events, never on this.
const DELAY_MS = 2000
// A delay that only a second signal ends within a test's lifetime.
const LONG_DELAY_MS = 600_000

describe('graceful shutdown behind a load balancer (serve.shutdownDelayMs)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let model: ServeModel
  let clusterConfig: string
  let body: string
  const children: ServeChild[] = []

  const serve = async (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const child = await startServe(['--port', '0', ...args], {cwd: dir, env})
    children.push(child)
    return child
  }

  /** The worker pids of a cluster, once every one has started. */
  const workerPids = async (server: ServeChild) => Promise.all([1, 2].map(async (worker) => (await server.waitForEvent((e) => e.event === 'process-started' && e.worker === worker)).workerPid as number))

  /** The event of every process: pids are the cluster's workers, or [undefined] for one process (its lines carry no pid). */
  const eachEvent = (server: ServeChild, event: string, pids: Array<number | undefined>) => Promise.all(pids.map((pid) => server.waitForEvent((e) => e.event === event && e.pid === pid)))

  const infer = (server: ServeChild) => request(`${server.url}/v2/models/digits/infer`, {body, headers: {'Content-Type': 'application/json'}, agent: false})

  /** Statuses of /readyz, KServe server and model readiness, each on a new connection. */
  const readiness = async (server: ServeChild) => (await Promise.all(['/readyz', '/v2/health/ready', '/v2/models/digits/ready'].map((url) => request(server.url + url, {agent: false})))).map((r) => r.status)

  /** Resolves once the server holds `count` requests in flight (the scrape that asks is one of them). */
  const inFlight = async (server: ServeChild, count: number) => {
    for (let scrape = 0; ; scrape++) {
      assert.ok(scrape < 1000, `the server never had ${count} requests in flight`)
      if (sample((await request(`${server.url}/metrics`, {agent: false})).text, 'ml_serve_in_flight_requests') >= count) return
    }
  }

  /**
   * Resolves once a connection to the port is refused. One process closes its listener at once; a
   * cluster primary closes the shared one once every process has told it theirs is closed.
   */
  const refused = async (port: number) => {
    for (let attempt = 0; ; attempt++) {
      assert.ok(attempt < 500, 'the port still accepts connections')
      const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        const socket = net.connect(port, '127.0.0.1')
        socket.once('connect', () => {
          socket.destroy()
          resolve(undefined)
        })
        socket.once('error', resolve)
      })
      if (error?.code === 'ECONNREFUSED') return
      // Paces the polling; it waits on nothing.
      await sleep(10)
    }
  }

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-serve-shutdown-'))
    const serveConfig = {instances: 1, maxBatchSize: 16, pollIntervalMs: 0, accessLog: 'off'}
    model = await trainServeModel(dir, {serve: serveConfig})
    clusterConfig = path.join(dir, 'cluster.yaml')
    await copyFile(model.config, clusterConfig)
    await setServeConfig(clusterConfig, {...serveConfig, processes: 2, shutdownDelayMs: DELAY_MS})
    const digit = (await testDigits(dir, 1))[3]!
    body = JSON.stringify({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [digit.png.toString('base64')]}]})
  })

  after(async () => {
    for (const child of children) if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL')
    await Promise.all(children.map((c) => c.done))
    await cleanup?.()
  })

  /**
   * SIGTERM: not ready at once, yet new connections are answered for the delay; then the port refuses
   * connections while the drain finishes what it holds, and the process exits 0.
   */
  async function delayThenDrain(server: ServeChild, pids: Array<number | undefined>) {
    assert.deepEqual(await readiness(server), [200, 200, 200])
    assert.equal((await infer(server)).status, 200)
    const held = heldRequest(`${server.url}/v2/models/digits/infer`, body)
    await inFlight(server, 2)
    server.child.kill('SIGTERM')
    const delays = await eachEvent(server, 'shutdown-delay', pids)
    assert.ok(delays.every((e) => e.delayMs === DELAY_MS))
    // Readiness turned false before the event was logged. A round per process: connections are spread over them.
    for (let round = 0; round < pids.length; round++) assert.deepEqual(await readiness(server), [503, 400, 400])
    const answers = await Promise.all(Array.from({length: 2 * pids.length}, () => infer(server)))
    assert.deepEqual(answers.map((r) => r.status), Array(2 * pids.length).fill(200), 'new connections are still served')
    assert.ok(answers.every((r) => r.json.outputs[0].shape.join() === '1,10'))
    assert.ok(answers.every((r) => r.headers.connection === 'close'), 'keep-alive clients are sent to reconnect')
    const draining = await eachEvent(server, 'draining', pids)
    assert.ok(draining.every((e) => (e.delayedMs as number) >= DELAY_MS - 50), JSON.stringify(draining))
    await refused(server.port)
    assert.equal(server.child.exitCode, null, 'the held request keeps the drain going')
    held.finish()
    assert.equal((await held.response).status, 200)
    const result = await server.done
    assert.equal(result.code, 0, result.stderr)
    assert.ok(!result.stderr.includes('"process-died"'), 'no process was killed or replaced')
  }

  /** A second SIGTERM during the delay: the drain starts at once and the process exits 0. */
  async function secondSignal(server: ServeChild, pids: Array<number | undefined>) {
    server.child.kill('SIGTERM')
    await eachEvent(server, 'shutdown-delay', pids)
    server.child.kill('SIGTERM')
    await server.waitForEvent((e) => e.event === 'shutdown-delay-skipped')
    const draining = await eachEvent(server, 'draining', pids)
    assert.ok(draining.every((e) => (e.delayedMs as number) < LONG_DELAY_MS), JSON.stringify(draining))
    const result = await server.done
    assert.equal(result.code, 0, result.stderr)
    assert.ok(!result.stderr.includes('"forced-exit"'))
  }

  it('one process (env ML_SHUTDOWN_DELAY_MS): serves, not ready, for the delay, then drains and exits 0', async () => {
    const server = await serve(['--config', model.config], {ML_SHUTDOWN_DELAY_MS: String(DELAY_MS)})
    await delayThenDrain(server, [undefined])
  })

  it('one process (--shutdown-delay): a second SIGTERM ends the delay', async () => {
    const server = await serve(['--config', model.config, '--shutdown-delay', String(LONG_DELAY_MS)])
    await secondSignal(server, [undefined])
  })

  it('one process: a signal during the drain itself exits at once (130)', async () => {
    const server = await serve(['--config', model.config, '--shutdown-delay', String(LONG_DELAY_MS)])
    const held = heldRequest(`${server.url}/v2/models/digits/infer`, body)
    held.response.catch(() => {})
    await inFlight(server, 2)
    server.child.kill('SIGTERM')
    await server.waitForEvent((e) => e.event === 'shutdown-delay')
    server.child.kill('SIGTERM')
    assert.equal((await server.waitForEvent((e) => e.event === 'draining')).inFlight, 1)
    server.child.kill('SIGTERM')
    const result = await server.done
    assert.equal(result.code, 130, result.stderr)
    assert.match(result.stderr, /"forced-exit"/)
  })

  it('serve.processes 2 (serve.shutdownDelayMs): every process serves, not ready, for the delay, then drains; exit 0', async () => {
    const server = await serve(['--config', clusterConfig])
    await delayThenDrain(server, await workerPids(server))
  })

  it('serve.processes 2: a second SIGTERM to the primary ends every process\'s delay', async () => {
    const server = await serve(['--config', clusterConfig, '--shutdown-delay', String(LONG_DELAY_MS)])
    await secondSignal(server, await workerPids(server))
  })
})
