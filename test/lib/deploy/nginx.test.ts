import assert from 'node:assert/strict'
import {spawn, spawnSync, type ChildProcess} from 'node:child_process'
import {watch} from 'node:fs'
import {access} from 'node:fs/promises'
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {loadConfig} from '../../../src/lib/config/load.js'
import {deployNginx} from '../../../src/lib/deploy/nginx.js'
import {UserError} from '../../../src/lib/errors.js'
import {runJson} from '../../support/cli.js'
import {tempDir} from '../../support/fixtures.js'
import {setServeConfig, startServe, testDigits, trainServeModel, type ServeChild, type ServeModel} from '../../support/serve-fixtures.js'

// Debian's nginx (apt-get install nginx-light); CI installs it, so there a missing binary fails the test.
const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => spawnSync(p, ['-v']).status === 0)
const skip = NGINX === undefined && process.env.CI !== 'true' ? 'nginx is not installed (apt-get install nginx-light)' : false

interface Answer {
  status: number | 'error'
  startedAt: number
  endedAt: number
}

/** One request through the load balancer's unix socket. */
function send(socketPath: string, agent: http.Agent, method: string, urlPath: string, body?: string): Promise<Answer> {
  const startedAt = performance.now()
  return new Promise((resolve) => {
    const req = http.request({socketPath, agent, method, path: urlPath, headers: body ? {'content-type': 'application/json', 'content-length': Buffer.byteLength(body)} : {}, timeout: 20_000}, (res) => {
      res.resume().on('end', () => resolve({status: res.statusCode!, startedAt, endedAt: performance.now()}))
    })
    req.on('timeout', () => req.destroy(new Error('client timeout')))
    req.on('error', () => resolve({status: 'error', startedAt, endedAt: performance.now()}))
    req.end(body)
  })
}

/** Starts nginx in the foreground and resolves once its listening socket exists. */
async function startNginx(prefix: string, socket: string): Promise<ChildProcess> {
  const created = new Promise<void>((resolve) => {
    const watcher = watch(path.dirname(socket), () => {
      access(socket).then(
        () => {
          watcher.close()
          resolve()
        },
        () => undefined,
      )
    })
  })
  const child = spawn(NGINX!, ['-p', prefix, '-c', 'nginx.conf', '-g', 'daemon off;'], {stdio: ['ignore', 'ignore', 'pipe']})
  let stderr = ''
  child.stderr!.on('data', (d) => {
    stderr += d
    if (process.env.DEBUG_LB) process.stderr.write(`${performance.now().toFixed(1)} nginx: ${d}`)
  })
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`nginx exited (${code}): ${stderr}`))))
  await Promise.race([created, exited])
  return child
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return
  const done = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGQUIT')
  await done
}

describe('ml deploy nginx', {skip}, () => {
  let dir: string
  let cleanup: () => Promise<void>
  let model: ServeModel
  let body: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-nginx-'))
    model = await trainServeModel(dir, {train: 100, test: 20})
    await setServeConfig(model.config, {instances: 1, pollIntervalMs: 0, accessLog: 'off', shutdownDelayMs: 200})
    const digit = (await testDigits(dir, 1))[5]!
    body = JSON.stringify({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [digit.png.toString('base64')]}]})
  })
  after(async () => cleanup?.())

  it('refuses to write a balancer without upstreams, naming the flag', async () => {
    await assert.rejects(deployNginx(await loadConfig(model.config), {}), (e: unknown) => e instanceof UserError && e.code === 'DEPLOY_NO_UPSTREAMS' && /--upstream/.test(e.suggestions.join(' ')))
    const {code, json} = await runJson<{error: {code: string}}>(['deploy', 'nginx', '--config', model.config, '--upstream', 'not an address'])
    assert.equal(code, 2)
    assert.match(JSON.stringify(json.error), /upstream|host:port/)
  })

  it('retries a 503 and a refused connection on another server, but never a request a server may have run', async () => {
    // Stand-ins for faults: a server that sheds everything with 503, and one that reads a request and
    // drops the connection without answering (it may have run it). The third is a real ml serve.
    const hits = {shed: 0, dropped: 0}
    const shed = http.createServer((req, res) => {
      hits.shed++
      req.resume().on('end', () => res.writeHead(503, {'retry-after': '1'}).end('{"error":"queue full"}'))
    })
    const dropper = http.createServer((req) => {
      hits.dropped++
      req.resume().on('end', () => req.socket.destroy())
    })
    await Promise.all([shed, dropper].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))))
    const real = await startServe(['--config', model.config, '--port', '0'])
    const out = path.join(dir, 'lb-faults')
    const socket = path.join(out, 'lb.sock')
    const upstreams = [shed, dropper].map((s) => `127.0.0.1:${(s.address() as AddressInfo).port}`).concat(`127.0.0.1:${real.port}`)
    await deployNginx(await loadConfig(model.config), {upstreams, listen: `unix:${socket}`, out})
    const nginx = await startNginx(out, socket)
    const agent = new http.Agent({keepAlive: true, maxSockets: 1})
    try {
      const answers: Answer[] = []
      for (let i = 0; i < 30; i++) {
        const before = hits.dropped
        const answer = await send(socket, agent, 'POST', '/v2/models/digits/infer', body)
        answers.push(answer)
        // A request the dropping server received is answered 502 and never sent anywhere else.
        if (hits.dropped > before) assert.equal(answer.status, 502, `request ${i} reached the dropping server and was retried`)
        else assert.equal(answer.status, 200, `request ${i}: ${answer.status}`)
      }
      assert.ok(hits.shed > 0, 'the shedding server got no request')
      assert.ok(hits.dropped > 0, 'the dropping server got no request')
      assert.equal(answers.filter((a) => a.status === 502).length, hits.dropped)
      // Every 503 was retried: none reached the client.
      assert.ok(answers.every((a) => a.status !== 503))
    } finally {
      agent.destroy()
      await stop(nginx)
      real.child.kill('SIGTERM')
      await real.done
      await Promise.all([shed, dropper].map((s) => new Promise((r) => s.close(r))))
    }
  })

  it('three servers under steady load: SIGKILL one, SIGTERM another; only requests in flight on the killed one fail', async () => {
    const servers: ServeChild[] = []
    for (let i = 0; i < 3; i++) servers.push(await startServe(['--config', model.config, '--port', '0', '--json']))
    const out = path.join(dir, 'lb')
    const socket = path.join(out, 'lb.sock')
    await deployNginx(await loadConfig(model.config), {upstreams: servers.map((s) => `127.0.0.1:${s.port}`), listen: `unix:${socket}`, out})
    const nginx = await startNginx(out, socket)
    const agent = new http.Agent({keepAlive: true, maxSockets: 8})
    const total = 600
    const concurrency = 8
    let started = 0
    let completed = 0
    let killedAt = Number.POSITIVE_INFINITY
    let terminated: Promise<unknown> | undefined
    let termAt = 0
    const killedExit = new Promise<number>((resolve) => servers[0]!.child.once('exit', () => resolve(performance.now())))
    const answers: Answer[] = []
    try {
      const loop = async () => {
        while (started < total) {
          started++
          const answer = await send(socket, agent, 'POST', '/v2/models/digits/infer', body)
          answers.push(answer)
          completed++
          // Kills are triggered by progress, not by time.
          if (completed === 150) {
            killedAt = performance.now()
            servers[0]!.child.kill('SIGKILL')
          }
          if (completed === 300) {
            termAt = performance.now()
            servers[1]!.child.kill('SIGTERM')
            terminated = servers[1]!.done
          }
        }
      }
      await Promise.all(Array.from({length: concurrency}, loop))
      const stopped = (await terminated) as {code: number; stderr: string}
      assert.equal(stopped.code, 0, `the SIGTERMed server did not drain cleanly: ${stopped.stderr}`)
      assert.equal(answers.length, total)
      const failed = answers.filter((a) => a.status !== 200)
      if (process.env.DEBUG_LB) console.error({killedAt, termAt, failed})
      // A dying server keeps accepting (in the kernel) until its process is gone, so each client loop may
      // lose more than one request to it; none of those may outlive that window, and nothing else may fail.
      assert.ok(failed.length < total / 10, `${failed.length} of ${total} requests failed`)
      // The killed server is gone when its process has exited (the kernel frees its memory before it
      // closes its sockets, so a large process keeps accepting for a moment after SIGKILL).
      const goneAt = await killedExit
      for (const f of failed) assert.ok(f.startedAt < goneAt && f.endedAt >= killedAt, `a request failed (${f.status}) that was not in flight on the killed server (killed ${killedAt.toFixed(0)}, gone ${goneAt.toFixed(0)}, request ${f.startedAt.toFixed(0)}-${f.endedAt.toFixed(0)})`)
      // After both kills only the third server is left, and it took every remaining request.
      assert.ok(answers.slice(-100).every((a) => a.status === 200))
      assert.equal(servers[2]!.child.exitCode, null)
    } finally {
      agent.destroy()
      await stop(nginx)
      for (const s of servers) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM')
      await Promise.all(servers.map((s) => s.done))
    }
  })
})
