// An open-loop load generator for latency at a given request rate (bench:serve's half-load run).
import {spawn} from 'node:child_process'
import {readFile, writeFile} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

export interface PacedResult {
  /** Milliseconds of each answered request, sorted. */
  latencies: number[]
  failed: number
  requestsPerSec: number
  /**
   * How late the generator's own 1 ms ticks ran (ms beyond 1 ms, p99 and max): a late tick sends
   * what fell due meanwhile as one burst, which a server sees as bursty arrivals.
   */
  tickLateP99Ms: number
  tickLateMaxMs: number
  /**
   * Epoch milliseconds at which the measured part began (after the warm-up): a server's own timings
   * of requests answered before it belong to the warm-up.
   */
  measuredFromEpochMs: number
  /** Requests sent, the warm-up's included (per-request CPU is CPU over the whole run / this). */
  sent: number
}

/** Connections the paced generator may open. */
const PACED_CONNECTIONS = 64

/**
 * Open-loop load at an even `rate`, like wrk2: a 1 ms tick releases every request whose time has
 * come, on an idle keep-alive connection, a new one up to PACED_CONNECTIONS, or else in line for the
 * next free one. A request that had to wait for a connection is timed from its scheduled time, so a
 * server that falls behind is charged for it (no coordinated omission); one sent at once is timed
 * from the send, so a late tick of this process is not. autocannon's overallRate is not this: each
 * connection sends its per-second quota back to back and then pauses, so its "half load" is
 * saturation half of every second. Raw sockets with prebuilt requests keep this as cheap as autocannon.
 */
export async function paced(url: string, bodies: string[], rate: number, seconds: number, warmupSeconds = 0): Promise<PacedResult> {
  const target = new URL(url)
  const requests = bodies.map((body) => Buffer.concat([
    Buffer.from(`POST ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`),
    Buffer.from(body),
  ]))
  interface Client {
    socket: net.Socket
    send(bytes: Buffer, scheduled: number): void
  }
  const latencies: number[] = []
  const idle: Client[] = []
  const waiting: Array<{bytes: Buffer; scheduled: number}> = []
  const all: net.Socket[] = []
  let failed = 0
  let outstanding = 0
  let drained: (() => void) | undefined
  /**
   * A request is over: the next waiting one goes out on `client` (the connection it came back on),
   * or, when that connection is gone, on an idle or a new one; otherwise `client` becomes idle.
   */
  const finished = (client: Client | undefined) => {
    const next = waiting.shift()
    if (next) (client ?? idle.pop() ?? connection()).send(next.bytes, next.scheduled)
    else if (client) idle.push(client)
    if (--outstanding === 0 && waiting.length === 0) drained?.()
  }
  const connection = (): Client => {
    const socket = net.connect(Number(target.port), target.hostname)
    socket.setNoDelay(true)
    all.push(socket)
    let buffer: Buffer = Buffer.alloc(0)
    let scheduledAt = 0
    let need = -1
    let status = 0
    let busy = false
    const client: Client = {
      socket,
      send(bytes, scheduled) {
        scheduledAt = scheduled
        outstanding++
        busy = true
        socket.write(bytes)
      },
    }
    socket.on('data', (chunk: Buffer) => {
      buffer = buffer.length > 0 ? Buffer.concat([buffer, chunk]) : chunk
      for (;;) {
        if (need < 0) {
          const end = buffer.indexOf('\r\n\r\n')
          if (end < 0) return
          const head = buffer.toString('latin1', 0, end)
          status = Number(head.slice(9, 12))
          need = end + 4 + Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        }
        if (buffer.length < need) return
        buffer = buffer.subarray(need)
        need = -1
        if (scheduledAt >= measuredFrom) {
          if (status === 200) latencies.push(performance.now() - scheduledAt)
          else failed++
        }
        busy = false
        finished(client)
      }
    })
    // A connection the server closed (an idle keep-alive timing out, say) leaves the pool; a request
    // it was carrying counts as failed, and what waits goes out on the others or a new one.
    socket.on('error', () => {})
    socket.on('close', () => {
      const at = idle.indexOf(client)
      if (at >= 0) idle.splice(at, 1)
      const index = all.indexOf(socket)
      if (index >= 0) all.splice(index, 1)
      if (!busy) return
      busy = false
      if (scheduledAt >= measuredFrom) failed++
      finished(undefined)
    })
    return client
  }
  const total = Math.round(rate * (warmupSeconds + seconds))
  const interval = 1000 / rate
  const start = performance.now()
  // The warm-up runs at the same rate on the same connections: what it measures is the steady state,
  // not this process's start (its code still cold, its connections opening) nor the step up to `rate`.
  const measuredFrom = start + warmupSeconds * 1000
  let sent = 0
  const late: number[] = []
  let lastTick = start
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now()
      if (now >= measuredFrom) late.push(Math.max(0, now - lastTick - 1))
      lastTick = now
      const due = Math.min(total, Math.floor((now - start) / interval) + 1)
      for (; sent < due; sent++) {
        const bytes = requests[sent % requests.length]!
        const scheduled = start + sent * interval
        const client = idle.pop() ?? (all.length < PACED_CONNECTIONS ? connection() : undefined)
        if (client) client.send(bytes, performance.now())
        else waiting.push({bytes, scheduled})
      }
      if (sent >= total) {
        clearInterval(timer)
        resolve()
      }
    }, 1)
  })
  if (outstanding > 0 || waiting.length > 0) await new Promise<void>((resolve) => (drained = resolve))
  const elapsed = (performance.now() - measuredFrom) / 1000
  for (const socket of [...all]) socket.destroy()
  late.sort((a, b) => a - b)
  return {
    latencies: latencies.sort((a, b) => a - b),
    failed,
    requestsPerSec: latencies.length / elapsed,
    tickLateP99Ms: late[Math.max(0, Math.ceil(0.99 * late.length) - 1)] ?? 0,
    tickLateMaxMs: late.at(-1) ?? 0,
    measuredFromEpochMs: performance.timeOrigin + measuredFrom,
    sent,
  }
}


/**
 * paced() in a process of its own, as wrk2 would be: the bench process holds a trained model, the
 * inference engine and its measurements, and its garbage collections would be counted as the
 * server's latency. The bodies travel through a temp file.
 */
export async function pacedInChild(url: string, bodies: string[], rate: number, seconds: number, workDir: string, warmupSeconds = 0): Promise<PacedResult> {
  const bodiesFile = path.join(workDir, 'paced-bodies.json')
  await writeFile(bodiesFile, JSON.stringify(bodies))
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), url, bodiesFile, String(rate), String(seconds), String(warmupSeconds)], {stdio: ['ignore', 'pipe', 'inherit']})
  let out = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  // 'close', not 'exit': it comes once stdout has been read to the end.
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
  if (code !== 0) throw new Error(`the paced load generator exited with ${code}`)
  return JSON.parse(out) as PacedResult
}

// Run as a script: paced.js <url> <bodies.json> <rate> <seconds> <warmup seconds>, the result as JSON on stdout.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [url, bodiesFile, rate, seconds, warmup] = process.argv.slice(2) as [string, string, string, string, string]
  const bodies = JSON.parse(await readFile(bodiesFile, 'utf8')) as string[]
  process.stdout.write(JSON.stringify(await paced(url, bodies, Number(rate), Number(seconds), Number(warmup))))
}
