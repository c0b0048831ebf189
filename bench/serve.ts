// Serving throughput and latency of the MNIST convnet (cnn-small, briefly trained on real digits) as one
// JSON object: raw batched inference, served saturation, half-load latency, gain over no batching, and
// the Python peer (KServe's ModelServer with onnxruntime on the same model.onnx) under the same load.
import autocannon from 'autocannon'
import {spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {loadConfig} from '../src/lib/config/load.js'
import {initEngine, type EnginePreference} from '../src/lib/engine/backend.js'
import {JsonLog} from '../src/lib/serve/log.js'
import {InstancePool} from '../src/lib/serve/pool.js'
import type {Runtime} from '../src/lib/serve/worker-protocol.js'
import {planThreads} from '../src/lib/engine/inference.js'
import {EVENT_LOOP_SAMPLE_MS} from '../src/lib/metric-names.js'
import {preprocessImage, type Preprocessing} from '../src/lib/serve/predictor.js'
import {readJson} from '../src/lib/storage/index.js'
import {tempDir} from '../test/support/fixtures.js'
import {sample} from '../test/support/serve-metrics.js'
import {setServeConfig, startServe, testDigits, trainServeModel, type ServeChild} from '../test/support/serve-fixtures.js'
import {PYTHON} from '../test/peers/support/python.js'
import {machineTicks, mainThreadCpuMs, startControl, stealPct} from './control.js'
import {pacedInChild, type PacedResult} from './paced.js'

/**
 * The served configuration: the default plan for this machine (planThreads: each process's event loop
 * keeps a core, instances x threads fill the rest). The raw measurement also tries the alternatives
 * (more instances, more threads per instance) and reports them, so the default is measured, not guessed.
 */
const PROCESSES = 1
const PLAN = planThreads(os.availableParallelism(), PROCESSES, {instances: 'auto', threads: 'auto'})
/**
 * Images per request of the client-batched measurements: a client that batches (Triton's
 * perf_analyzer -b 8 / -b 64), sending binary tensor data as tritonclient does by default.
 */
const CLIENT_BATCHES = [8, 64] as const
const MAX_BATCH = 64
const QUEUE_DELAY_MS = 2
const CONNECTIONS = 128
const SATURATION_SECONDS = 5
const HALF_LOAD_SECONDS = 8
/**
 * Each half-load run first paces at its rate for this long in the same generator process, left out
 * of the figures: the steady state is measured, not the generator's own start nor the step up.
 */
const HALF_LOAD_WARMUP_SECONDS = 1
const RAW_SECONDS = 3
const SINGLE_SECONDS = 4
/** The peer's client-batched and own-half-load runs: shorter, so that the whole bench stays near six minutes. */
const PEER_BATCHED_SECONDS = 3
/** Measured rounds (raw, served, batching off); `--rounds 1` for a quicker run. */
const ROUNDS = process.argv.includes('--rounds') ? Math.max(1, Math.floor(Number(process.argv[process.argv.indexOf('--rounds') + 1])) || 2) : 2
/** Targets of issue 24 on this machine. */
const TARGETS = {jsonVsHttpCeiling: 0.9, clientBatchedVsRaw: 0.8}

const note = (message: string) => process.stderr.write(`[bench:serve] ${message}\n`)

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits

interface RawConfig {
  runtime: Runtime
  instances: number
  threads: number
}

/** Images/s of back-to-back batches on the instances, no HTTP: what serving could reach at best. */
async function rawBatched(engine: EnginePreference, versionDir: string, digits: Float32Array[], preprocessing: Preprocessing, labels: string[], config: RawConfig): Promise<number> {
  const pool = await InstancePool.start(config.instances, engine, new JsonLog(undefined))
  try {
    await pool.load({key: 'm/1', dir: versionDir, runtime: config.runtime, threads: config.threads, inputShape: [preprocessing.height, preprocessing.width, preprocessing.channels], numClasses: labels.length, warmup: [1, MAX_BATCH]})
    const size = digits[0]!.length
    const template = new Float32Array(MAX_BATCH * size)
    for (let i = 0; i < MAX_BATCH; i++) template.set(digits[i % digits.length]!, i * size)
    let images = 0
    let counting = false
    const end = performance.now() + 1000 + RAW_SECONDS * 1000
    let countedFrom = 0
    const loop = async () => {
      while (performance.now() < end) {
        // Copied into the instance's batch buffer, as the server's batches are.
        await pool.run('m/1', [template], MAX_BATCH)
        if (!counting && performance.now() >= end - RAW_SECONDS * 1000) {
          counting = true
          countedFrom = performance.now()
        }
        if (counting) images += MAX_BATCH
      }
    }
    await Promise.all(Array.from({length: config.instances}, loop))
    return images / ((performance.now() - countedFrom) / 1000)
  } finally {
    await pool.close()
  }
}

/**
 * Raw batched throughput of each engine with every core busy (the machine's limit), and of ONNX
 * Runtime in each instances x threads split of the cores, the served plan among them.
 */
async function rawByEngine(engine: EnginePreference, versionDir: string, digits: Float32Array[], preprocessing: Preprocessing, labels: string[]) {
  const cores = os.availableParallelism()
  const measure = (config: RawConfig) => rawBatched(engine, versionDir, digits, preprocessing, labels, config)
  const configs = [[PLAN.instances, PLAN.threads], [1, cores], [cores, 1]].filter(([i, t], k, all) => all.findIndex(([i2, t2]) => i2 === i && t2 === t) === k)
  const splits: Array<{instances: number; threads: number; imagesPerSec: number}> = []
  for (const [instances, threads] of configs) splits.push({instances: instances!, threads: threads!, imagesPerSec: await measure({runtime: 'onnx', instances: instances!, threads: threads!})})
  // The wasm backend runs on one thread: its limit is one instance per core.
  const tfjs = await measure({runtime: 'tfjs', instances: cores, threads: 1})
  const onnxruntime = Math.max(...splits.map((s) => s.imagesPerSec))
  return {onnxruntime, tfjs, best: Math.max(onnxruntime, tfjs), plan: splits[0]!.imagesPerSec, splits}
}

interface Load {
  imagesPerSec: number
  latencies: number[]
  non2xx: number
  errors: number
  autocannonP99: number
}

/** A request body, with headers of its own when it is not JSON (binary tensor data). */
type Body = string | {body: Buffer; headers: Record<string, string>}

async function load(url: string, bodies: Body[], options: {seconds: number; rate?: number; connections?: number; imagesPerRequest?: number}): Promise<Load> {
  const latencies: number[] = []
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({
      url,
      method: 'POST',
      headers: {'content-type': 'application/json'},
      requests: bodies.map((body) => (typeof body === 'string' ? {method: 'POST', body} : {method: 'POST', body: body.body, headers: body.headers})),
      connections: options.connections ?? CONNECTIONS,
      duration: options.seconds,
      ...(options.rate ? {overallRate: options.rate} : {}),
    }, (error, done) => (error ? reject(error as Error) : resolve(done)))
    // autocannon's histogram keeps whole milliseconds; its response events carry the exact time.
    instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      if (status === 200) latencies.push(ms)
    })
  })
  latencies.sort((a, b) => a - b)
  return {imagesPerSec: (result['2xx'] * (options.imagesPerRequest ?? 1)) / result.duration, latencies, non2xx: result.non2xx, errors: result.errors + result.timeouts, autocannonP99: result.latency.p99}
}

/**
 * The most requests/s the do-nothing control server (bench/control.ts) takes here: one-image JSON,
 * and each client batch size in binary tensor data (the same connections as clientBatchedLoads).
 */
async function httpCeiling(bodies: Bodies, dir: string, withBatches: boolean): Promise<{json: number; /** Requests/s of each size. */ clientBatched: Record<number, number>}> {
  const control = await startControl({hop: false, timingsFile: path.join(dir, 'control-timings.json')})
  try {
    const json = (await load(`${control.url}/`, bodies.fp32, {seconds: 5})).imagesPerSec
    const clientBatched: Record<number, number> = {}
    if (withBatches) {
      for (const size of CLIENT_BATCHES) clientBatched[size] = (await load(`${control.url}/`, bodies.clientBatched[size]!, {seconds: SATURATION_SECONDS, connections: batchConnections(size)})).imagesPerSec
    }
    return {json, clientBatched}
  } finally {
    await control.stop()
  }
}

/**
 * The control server with the real model (bench/control.ts, engine mode) at the served plan's instances
 * and threads, under the same loads as a served round: HTTP, parsing and ONNX Runtime with batching,
 * and nothing else (no scheduler, metrics, log or protocol checks). What serving can reach here at
 * most, measured rather than estimated; ml's figures are taken against it in the same round.
 */
async function minimalServer(bodies: Bodies, dir: string, onnxFile: string, inputShape: [number, number, number]): Promise<{json: number; clientBatched: Record<number, number>}> {
  const control = await startControl({hop: false, timingsFile: path.join(dir, 'control-timings.json'), engine: {onnxFile, inputShape, instances: PLAN.instances, threads: PLAN.threads, maxBatchSize: MAX_BATCH}})
  try {
    await load(`${control.url}/`, bodies.fp32, {seconds: 1})
    const json = (await load(`${control.url}/`, bodies.fp32, {seconds: SATURATION_SECONDS})).imagesPerSec
    const loads = await clientBatchedLoads(`${control.url}/`, bodies, 'the minimal server')
    return {json, clientBatched: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, loads[size]!.imagesPerSec]))}
  } finally {
    await control.stop()
  }
}

/** Connections of the client-batched loads: CONNECTIONS images in flight, at least 2 requests. */
const batchConnections = (size: number) => Math.max(2, Math.ceil(CONNECTIONS / size))

/** The server's batch-size histogram sum and count so far. */
async function batches(url: string): Promise<{sum: number; count: number; lagMaxMs: number; lagP99Ms: number; minorGcs: number; minorGcSeconds: number}> {
  const text = await new Promise<string>((resolve, reject) => {
    http.get(`${url}/metrics`, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve(body))
    }).on('error', reject)
  })
  return {
    sum: sample(text, 'ml_serve_batch_size_sum'),
    count: sample(text, 'ml_serve_batch_size_count'),
    // Event-loop lag since the previous scrape (prom-client resets it on each), beyond the sampling
    // interval that the metric includes; and young-generation GCs so far.
    lagMaxMs: Math.max(0, sample(text, 'nodejs_eventloop_lag_max_seconds') * 1000 - EVENT_LOOP_SAMPLE_MS),
    lagP99Ms: Math.max(0, sample(text, 'nodejs_eventloop_lag_p99_seconds') * 1000 - EVENT_LOOP_SAMPLE_MS),
    minorGcs: sample(text, 'nodejs_gc_duration_seconds_count', {kind: 'minor'}),
    minorGcSeconds: sample(text, 'nodejs_gc_duration_seconds_sum', {kind: 'minor'}),
  }
}

/** The access log's entries so far. */
async function accessLogLines(file: string): Promise<Array<{time: string; ms: number}>> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as {time: string; ms: number})
}

async function serve(config: string, cwd: string): Promise<ServeChild> {
  return startServe(['--config', config, '--port', '0'], {cwd})
}

async function stop(server: ServeChild): Promise<void> {
  server.child.kill('SIGTERM')
  const result = await server.done
  if (result.code !== 0) throw new Error(`ml serve exited with ${result.code}:\n${result.stderr}`)
}

/** The request bodies every measurement sends (the same digits in each form). */
interface Bodies {
  fp32: string[]
  b64: string[]
  binary: Body[]
  /** CLIENT_BATCHES[i] images per request, binary tensor data. */
  clientBatched: Record<number, Body[]>
}

async function requestBodies(dir: string, preprocessing: Preprocessing): Promise<{bodies: Bodies; floats: Float32Array[]}> {
  const digits = await testDigits(dir, 2)
  const floats = await Promise.all(digits.map((d) => preprocessImage(d.png, preprocessing, d.label)))
  // What tritonclient sends by default: the JSON request, then the tensor as raw little-endian bytes.
  const binaryBody = (images: Float32Array[]): Body => {
    const head = Buffer.from(JSON.stringify({inputs: [{name: 'image', shape: [images.length, 28, 28, 1], datatype: 'FP32', parameters: {binary_data_size: images.length * 784 * 4}}]}))
    const tensor = Buffer.concat(images.map((f) => Buffer.from(f.buffer, f.byteOffset, f.byteLength)))
    return {body: Buffer.concat([head, tensor]), headers: {'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length)}}
  }
  const clientBatched: Record<number, Body[]> = {}
  for (const size of CLIENT_BATCHES) clientBatched[size] = floats.map((_, i) => binaryBody(Array.from({length: size}, (_, j) => floats[(i + j) % floats.length]!)))
  return {
    floats,
    bodies: {
      fp32: floats.map((f) => JSON.stringify({inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', data: Array.from(f)}]})),
      b64: digits.map((d) => JSON.stringify({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [d.png.toString('base64')]}]})),
      binary: floats.map((f) => binaryBody([f])),
      clientBatched,
    },
  }
}

interface Saturation {
  json: Load
  binary: Load
  clientBatched: Record<number, Load>
  batches: {before: {sum: number; count: number}; after: {sum: number; count: number}}
}

/** Client-batched binary requests at saturation, CLIENT_BATCHES[i] images each (fewer connections for bigger batches). */
/** Event-loop CPU microseconds per answered request over a paced run (Linux; null elsewhere). */
function perRequestMicros(before: number | undefined, after: number | undefined, run: PacedResult): number | null {
  if (before === undefined || after === undefined || run.sent === 0) return null
  return Math.round(((after - before) * 1000) / run.sent)
}

/**
 * The half-load latency floor of this machine: the control server, each request making the round
 * trip to a worker thread that ml serve's hand-off to an instance makes, paced at ml's half-load rate
 * and timed inside the server as ml's access log is. On a VM, waking a thread on another vCPU can wait
 * for the hypervisor (steal), which no server code avoids.
 */
async function halfLoadFloor(bodies: Bodies, rate: number, dir: string) {
  const control = await startControl({hop: true, timingsFile: path.join(dir, 'control-timings.json')})
  try {
    const ticks = machineTicks()
    const cpu = mainThreadCpuMs(control.pid)
    // The same warm-up at the same rate as ml serve's run; its requests are left out of the timings.
    const run = await pacedInChild(`${control.url}/`, bodies.fp32, rate, HALF_LOAD_SECONDS, dir, HALF_LOAD_WARMUP_SECONDS)
    const loopMicros = perRequestMicros(cpu, mainThreadCpuMs(control.pid), run)
    const steal = stealPct(ticks, machineTicks())
    const timings = (await control.stop(run.measuredFromEpochMs)).sort((a, b) => a - b)
    return {p50Ms: round(percentile(timings, 50)), p99Ms: round(percentile(timings, 99)), eventLoopMicrosPerRequest: loopMicros, stealPct: steal, generatorTickLateMaxMs: round(run.tickLateMaxMs)}
  } catch (error) {
    await control.stop().catch(() => [])
    throw error
  }
}

async function clientBatchedLoads(inferUrl: string, bodies: Bodies, label: string): Promise<Record<number, Load>> {
  const loads: Record<number, Load> = {}
  for (const size of CLIENT_BATCHES) {
    note(`${label}: ${size} images per request (binary tensor data)`)
    loads[size] = await load(inferUrl, bodies.clientBatched[size]!, {seconds: SATURATION_SECONDS, imagesPerRequest: size, connections: batchConnections(size)})
  }
  return loads
}

/** A served configuration at saturation: one-image JSON, one-image binary, and client-batched binary. */
async function saturate(url: string, bodies: Bodies, label: string): Promise<Saturation> {
  const inferUrl = `${url}/v2/models/mnist/infer`
  note(`${label}: one-image JSON requests, ${CONNECTIONS} connections for ${SATURATION_SECONDS} s`)
  const before = await batches(url)
  const json = await load(inferUrl, bodies.fp32, {seconds: SATURATION_SECONDS})
  const after = await batches(url)
  const clientBatched = await clientBatchedLoads(inferUrl, bodies, label)
  note(`${label}: binary tensor data (the tritonclient default), one image per request`)
  const binary = await load(inferUrl, bodies.binary, {seconds: SATURATION_SECONDS})
  return {json, binary, clientBatched, batches: {before, after}}
}

/** The same instances with batching off: what dynamic batching gains, at the same instance count. */
async function naiveRequestsPerSec(config: string, dir: string, served: Record<string, unknown>, bodies: Bodies): Promise<Load> {
  await setServeConfig(config, {...served, maxBatchSize: 1, maxQueueDelayMs: 0})
  const server = await serve(config, dir)
  try {
    const url = `${server.url}/v2/models/mnist/infer`
    await load(url, bodies.fp32, {seconds: 1})
    return await load(url, bodies.fp32, {seconds: SATURATION_SECONDS})
  } finally {
    await stop(server)
  }
}

/** The Python peer: KServe's ModelServer with Python onnxruntime on the same model.onnx (bench/peers/kserve_server.py). */
interface PeerServer {
  url: string
  versions: {onnxruntime: string; kserve: string}
  stop(): Promise<void>
}

async function startPeer(onnxFile: string, threads: number): Promise<PeerServer> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'peers', 'kserve_server.py')
  const child = spawn(PYTHON, [script, onnxFile, '--name', 'mnist', '--threads', String(threads)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {...process.env, PYTHONHASHSEED: '0', OMP_NUM_THREADS: String(threads)},
  })
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)))
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let out = ''
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d
        if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')))
      })
      void exited.then((code) => reject(new Error(`the KServe peer exited (${code}) before listening:\n${stderr}`)))
    })
    const started = JSON.parse(line) as {port: number; onnxruntime: string; kserve: string}
    const url = `http://127.0.0.1:${started.port}`
    // The socket is bound before the app starts: ready once /v2/health/ready answers 200.
    for (const until = performance.now() + 120_000; ; ) {
      const status = await new Promise<number>((resolve) => {
        http.get(`${url}/v2/health/ready`, (res) => {
          res.resume()
          resolve(res.statusCode ?? 0)
        }).on('error', () => resolve(0))
      })
      if (status === 200) break
      if (child.exitCode !== null || performance.now() > until) throw new Error(`the KServe peer did not become ready:\n${stderr}`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    return {url, versions: {onnxruntime: started.onnxruntime, kserve: started.kserve}, stop}
  } catch (error) {
    await stop()
    throw error
  }
}

interface PeerFigures {
  json: Load
  clientBatched: Record<number, Load>
  /** At our half-load rate, and at half the peer's own saturation. */
  halfLoad: PacedResult
  ownHalfLoad: PacedResult
  ownHalfRate: number
  versions: PeerServer['versions']
}

/** The peer under the same loads as ml serve: saturation (one-image JSON, client-batched binary) and paced half load. */
async function measurePeer(onnxFile: string, threads: number, bodies: Bodies, halfRate: number, dir: string): Promise<PeerFigures> {
  const peer = await startPeer(onnxFile, threads)
  try {
    const inferUrl = `${peer.url}/v2/models/mnist/infer`
    await load(inferUrl, bodies.fp32, {seconds: 1})
    note(`peer: one-image JSON requests, ${CONNECTIONS} connections for ${SATURATION_SECONDS} s`)
    const json = await load(inferUrl, bodies.fp32, {seconds: SATURATION_SECONDS})
    const clientBatched: Record<number, Load> = {}
    for (const size of CLIENT_BATCHES) {
      note(`peer: ${size} images per request (binary tensor data)`)
      clientBatched[size] = await load(inferUrl, bodies.clientBatched[size]!, {seconds: PEER_BATCHED_SECONDS, imagesPerRequest: size, connections: Math.max(2, Math.ceil(CONNECTIONS / size))})
    }
    note(`peer: ml's half load, ${Math.round(halfRate)} requests/s for ${HALF_LOAD_SECONDS} s`)
    const halfLoad = await pacedInChild(inferUrl, bodies.fp32, Math.round(halfRate), HALF_LOAD_SECONDS, dir, HALF_LOAD_WARMUP_SECONDS)
    const ownHalfRate = Math.max(1, Math.round(json.imagesPerSec / 2))
    note(`peer: its own half load, ${ownHalfRate} requests/s for ${PEER_BATCHED_SECONDS * 2} s`)
    const ownHalfLoad = await pacedInChild(inferUrl, bodies.fp32, ownHalfRate, PEER_BATCHED_SECONDS * 2, dir, HALF_LOAD_WARMUP_SECONDS)
    return {json, clientBatched, halfLoad, ownHalfLoad, ownHalfRate, versions: peer.versions}
  } finally {
    await peer.stop()
  }
}

const failures = (...loads: Load[]) => loads.reduce((n, l) => n + l.non2xx + l.errors, 0)

/** /proc/pressure/cpu "some avg60" (percent), or null where the kernel does not report it. */
async function cpuPressure(): Promise<number | null> {
  const text = await readFile('/proc/pressure/cpu', 'utf8').catch(() => '')
  const match = /^some .*avg60=([\d.]+)/m.exec(text)
  return match ? Number(match[1]) : null
}

async function main(): Promise<void> {
  const started = performance.now()
  const loadAverage = os.loadavg()[0]!
  const cpuPressureStart = await cpuPressure()
  const {dir, cleanup} = await tempDir('ml-bench-serve-')
  try {
    note('training cnn-small on 3000 real MNIST digits (1 epoch) and exporting it (tfjs and onnx)')
    const model = await trainServeModel(dir, {preset: 'cnn-small', train: 3000, test: 100, epochs: 1, batchSize: 64, name: 'mnist'})
    // The server's instances take train.backend, as training did; so do the raw measurement and this.
    const backend = (await loadConfig(model.config)).config.train.backend
    const engine = await initEngine(backend)
    const preprocessing = await readJson<Preprocessing>(path.join(model.versionDir, 'preprocessing.json'))
    const labels = await readJson<string[]>(path.join(model.versionDir, 'labels.json'))
    const {bodies, floats} = await requestBodies(dir, preprocessing)
    const accessLog = path.join(dir, 'access.log')
    const served = {processes: PROCESSES, instances: PLAN.instances, threads: PLAN.threads, maxBatchSize: MAX_BATCH, maxQueueDelayMs: QUEUE_DELAY_MS, maxQueueSize: 4096, accessLog, pollIntervalMs: 0}

    note('HTTP ceiling: a do-nothing Node server under the same load')
    const ceilings = [await httpCeiling(bodies, dir, false)]
    // Raw, served and naive alternate, ROUNDS times: other processes on the machine slow all of them down,
    // so each ratio is taken within a round (back to back) and the rounds' ratios are averaged.
    const raws: Array<Awaited<ReturnType<typeof rawByEngine>>> = []
    const rounds: Saturation[] = []
    const minimals: Array<Awaited<ReturnType<typeof minimalServer>>> = []
    const naives: Load[] = []
    let single = 0
    for (let round = 1; round <= ROUNDS; round++) {
      note(`round ${round}: raw batched inference per engine, batches of ${MAX_BATCH}`)
      raws.push(await rawByEngine(backend, model.versionDir, floats, preprocessing, labels))
      await setServeConfig(model.config, served)
      const server = await serve(model.config, dir)
      try {
        const inferUrl = `${server.url}/v2/models/mnist/infer`
        if (round === 1) {
          note('single-request latency')
          // 50 requests/s: each finds the server idle. The same client as the half-load run.
          single = percentile((await pacedInChild(inferUrl, bodies.fp32, 50, SINGLE_SECONDS, dir)).latencies, 50)
        }
        await load(inferUrl, bodies.fp32, {seconds: 1})
        rounds.push(await saturate(server.url, bodies, `round ${round}`))
      } finally {
        await stop(server)
      }
      note(`round ${round}: the minimal server (HTTP and the same ONNX model in ${PLAN.instances} worker thread(s), nothing else) under the same loads`)
      minimals.push(await minimalServer(bodies, dir, path.join(model.versionDir, 'model.onnx'), [preprocessing.height, preprocessing.width, preprocessing.channels]))
      note(`round ${round}: the same ${PLAN.instances} instance(s), batching off`)
      naives.push(await naiveRequestsPerSec(model.config, dir, served, bodies))
    }
    ceilings.push(await httpCeiling(bodies, dir, true))
    // The instance gain, apart from batching: one instance per core (the event loop sharing one) against the plan.
    const cores = os.availableParallelism()
    let perCore: Load | undefined
    let perCoreBatched: Record<number, Load> = {}
    if (cores !== PLAN.instances) {
      note(`${cores} instances (one per core), batching on: the instance gain`)
      await setServeConfig(model.config, {...served, instances: cores, threads: 1})
      const wide = await serve(model.config, dir)
      try {
        await load(`${wide.url}/v2/models/mnist/infer`, bodies.fp32, {seconds: 1})
        perCore = await load(`${wide.url}/v2/models/mnist/infer`, bodies.fp32, {seconds: SATURATION_SECONDS})
        // Client-batched requests leave the event loop little to do: can the engine have every core?
        perCoreBatched = await clientBatchedLoads(`${wide.url}/v2/models/mnist/infer`, bodies, `${cores} instances`)
      } finally {
        await stop(wide)
      }
    }

    await setServeConfig(model.config, served)
    let server = await serve(model.config, dir)
    const inferUrl = `${server.url}/v2/models/mnist/infer`
    const metadata = await new Promise<{engine?: Record<string, unknown>}>((resolve, reject) => {
      http.get(`${server.url}/v2`, (res) => {
        let body = ''
        res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve(JSON.parse(body) as {engine?: Record<string, unknown>}))
      }).on('error', reject)
    })
    const best = rounds.reduce((a, b) => (b.json.imagesPerSec > a.json.imagesPerSec ? b : a))
    const half = best.json.imagesPerSec / 2
    note(`half load: ${Math.round(half)} requests/s for ${HALF_LOAD_SECONDS} s`)
    await load(inferUrl, bodies.fp32, {seconds: 1})
    const afterSaturation = await batches(server.url)
    const logged = await accessLogLines(accessLog)
    const ticksBefore = machineTicks()
    const cpuBefore = mainThreadCpuMs(server.child.pid!)
    const halfLoad = await pacedInChild(inferUrl, bodies.fp32, Math.round(half), HALF_LOAD_SECONDS, dir, HALF_LOAD_WARMUP_SECONDS)
    const loopMicrosPerRequest = perRequestMicros(cpuBefore, mainThreadCpuMs(server.child.pid!), halfLoad)
    const halfLoadSteal = stealPct(ticksBefore, machineTicks())
    const serverHalfLoad = (await accessLogLines(accessLog)).slice(logged.length).filter((line) => Date.parse(line.time) >= halfLoad.measuredFromEpochMs).map((line) => line.ms).sort((a, b) => a - b)
    const afterHalfLoad = await batches(server.url)
    note(`half-load floor: the control server with a worker-thread round trip, ${Math.round(half)} requests/s for ${HALF_LOAD_SECONDS} s`)
    const floor = await halfLoadFloor(bodies, Math.round(half), dir)
    note('b64 PNG images (BYTES) at saturation')
    const b64 = await load(inferUrl, bodies.b64, {seconds: SATURATION_SECONDS})
    await stop(server)

    note('TensorFlow.js beside it: the same server with serve.runtime tfjs')
    await setServeConfig(model.config, {...served, runtime: 'tfjs'})
    server = await serve(model.config, dir)
    let tfjsServed: Saturation
    try {
      await load(`${server.url}/v2/models/mnist/infer`, bodies.fp32, {seconds: 1})
      tfjsServed = await saturate(server.url, bodies, 'tfjs')
    } finally {
      await stop(server)
    }
    const tfjsNaive = await naiveRequestsPerSec(model.config, dir, {...served, runtime: 'tfjs'}, bodies)

    // The Python peer on the same model.onnx, under the same load generator and connections.
    const peerThreads = PLAN.instances * PLAN.threads
    let peer: PeerFigures | undefined
    let peerSkipped: string | undefined
    if (!existsSync(PYTHON)) peerSkipped = `the Python peer is not installed (${PYTHON}): run scripts/peers/python.sh`
    else {
      note(`Python peer: KServe ModelServer + onnxruntime (${peerThreads} intra-op thread(s), 1 process)`)
      try {
        peer = await measurePeer(path.join(model.versionDir, 'model.onnx'), peerThreads, bodies, half, dir)
      } catch (error) {
        peerSkipped = `the KServe peer failed: ${(error as Error).message}`
        note(peerSkipped)
      }
    }

    const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length
    const ceiling = mean(ceilings.map((c) => c.json))
    const raw = mean(raws.map((r) => r.best))
    const perRound = (pick: (r: Saturation) => Load, against: (i: number) => number) => mean(rounds.map((r, i) => pick(r).imagesPerSec / against(i)))
    const jsonVsCeiling = mean(rounds.map((r) => r.json.imagesPerSec)) / ceiling
    const clientBatchedVsRaw = Object.fromEntries(CLIENT_BATCHES.map((size) => [size, round(perRound((r) => r.clientBatched[size]!, (i) => raws[i]!.best))]))
    // What the one-image JSON ratio can reach at most on these cores: the ceiling's run keeps every core
    // busy (load generator and server), so a request costs cores/ceiling core-seconds of HTTP and JSON;
    // serving adds at least the engine's time per image on one thread (the 1 x 1 raw split). Even a
    // server with no overhead of its own stays under h / (h + e).
    const httpCoreSecondsPerRequest = os.availableParallelism() / ceiling
    const oneThread = raws[0]!.splits.findIndex((split) => split.instances === 1 && split.threads === 1)
    const engineCoreSecondsPerImage = oneThread < 0 ? Number.NaN : 1 / mean(raws.map((r) => r.splits[oneThread]!.imagesPerSec))
    const jsonBound = httpCoreSecondsPerRequest / (httpCoreSecondsPerRequest + engineCoreSecondsPerImage)
    // The same bound for client-batched binary requests against the best raw split: the control server
    // takes `ceiling` requests/s of that size with every core busy, so a request costs cores/ceiling
    // core-seconds of HTTP and parsing; the engine needs cores/raw core-seconds per image at best.
    const engineBestCoreSecondsPerImage = os.availableParallelism() / raw
    const clientBatchedBound = Object.fromEntries(CLIENT_BATCHES.map((size) => {
      const requestsPerSec = ceilings.at(-1)!.clientBatched[size]!
      const httpPerImage = os.availableParallelism() / requestsPerSec / size
      return [size, {bound: engineBestCoreSecondsPerImage / (engineBestCoreSecondsPerImage + httpPerImage), httpMicrosPerRequest: (httpPerImage * size) * 1e6, ceilingRequestsPerSec: requestsPerSec}]
    }))
    const serverP99 = percentile(serverHalfLoad, 99)
    const p99TargetMs = 2 * single + QUEUE_DELAY_MS
    const result = {
      model: 'cnn-small (MNIST convnet), 1 epoch on 3000 real digits',
      backend: engine.backend,
      engine: metadata.engine ?? null,
      cores: os.availableParallelism(),
      instances: PLAN.instances,
      threads: PLAN.threads,
      processes: PROCESSES,
      maxBatchSize: MAX_BATCH,
      maxQueueDelayMs: QUEUE_DELAY_MS,
      connections: CONNECTIONS,
      // The best engine's in-process batched throughput: the machine's limit for this model.
      rawBatchedImagesPerSec: Math.round(raw),
      rawBatchedImagesPerSecByEngine: {onnxruntime: Math.round(mean(raws.map((r) => r.onnxruntime))), tfjs: Math.round(mean(raws.map((r) => r.tfjs)))},
      // ONNX Runtime in each instances x threads split of the cores (the first is the served plan).
      rawOnnxSplits: raws[0]!.splits.map((split, i) => ({instances: split.instances, threads: split.threads, imagesPerSec: Math.round(mean(raws.map((r) => r.splits[i]!.imagesPerSec)))})),
      httpCeilingRequestsPerSec: Math.round(ceiling),
      servedImagesPerSec: Math.round(mean(rounds.map((r) => r.json.imagesPerSec))),
      saturationRatio: round(perRound((r) => r.json, (i) => raws[i]!.best)),
      servedBinaryImagesPerSec: Math.round(mean(rounds.map((r) => r.binary.imagesPerSec))),
      servedClientBatchedImagesPerSec: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, Math.round(mean(rounds.map((r) => r.clientBatched[size]!.imagesPerSec)))])),
      targets: {
        jsonVsHttpCeiling: {
          value: round(jsonVsCeiling),
          target: TARGETS.jsonVsHttpCeiling,
          met: jsonVsCeiling >= TARGETS.jsonVsHttpCeiling,
          // The most any server could reach here (see above), and the CPU figures it comes from.
          boundFromCpu: round(jsonBound),
          httpMicrosPerRequest: round(httpCoreSecondsPerRequest * 1e6, 1),
          engineMicrosPerImage: round(engineCoreSecondsPerImage * 1e6, 1),
        },
        clientBatchedVsRaw: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, {
          value: clientBatchedVsRaw[size],
          target: TARGETS.clientBatchedVsRaw,
          met: clientBatchedVsRaw[size]! >= TARGETS.clientBatchedVsRaw,
          boundFromCpu: round(clientBatchedBound[size]!.bound),
          httpMicrosPerRequest: round(clientBatchedBound[size]!.httpMicrosPerRequest, 1),
        }])),
        // Timed inside the server (access log: request received to response sent). floorP99: the control
        // server with the same hand-off to a worker thread and nothing else, at the same rate.
        serverP99AtHalfLoadMs: {value: round(serverP99), target: round(p99TargetMs), met: serverP99 <= p99TargetMs, floorP99: floor.p99Ms},
      },
      // The control server with the real model (see minimalServer), alternating with ml in every round:
      // how close to the ceiling and to raw any server gets on this machine, and ml against it.
      minimalServer: {
        instances: PLAN.instances,
        threads: PLAN.threads,
        imagesPerSec: Math.round(mean(minimals.map((m) => m.json))),
        clientBatchedImagesPerSec: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, Math.round(mean(minimals.map((m) => m.clientBatched[size]!)))])),
        jsonVsHttpCeiling: round(mean(minimals.map((m) => m.json)) / ceiling),
        clientBatchedVsRaw: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, round(mean(minimals.map((m, i) => m.clientBatched[size]! / raws[i]!.best)))])),
        mlVsMinimal: {
          json: round(mean(rounds.map((r, i) => r.json.imagesPerSec / minimals[i]!.json))),
          ...Object.fromEntries(CLIENT_BATCHES.map((size) => [size, round(mean(rounds.map((r, i) => r.clientBatched[size]!.imagesPerSec / minimals[i]!.clientBatched[size]!)))])),
        },
      },
      halfLoadTargetRequestsPerSec: Math.round(half),
      halfLoadRequestsPerSec: Math.round(halfLoad.requestsPerSec),
      p50Ms: round(percentile(halfLoad.latencies, 50)),
      p99Ms: round(percentile(halfLoad.latencies, 99)),
      singleRequestMs: round(single),
      // With the server's event-loop lag and young-generation GC pauses over the same seconds: on a quiet
      // machine a scavenge takes about a millisecond and the lag stays near the 10 ms sampling precision.
      serverHalfLoad: {
        // Seconds paced at the same rate before the measured ones (also for the floor and the peer).
        warmupSeconds: HALF_LOAD_WARMUP_SECONDS,
        p50Ms: round(percentile(serverHalfLoad, 50)),
        p99Ms: round(serverP99),
        eventLoopLagMaxMs: round(afterHalfLoad.lagMaxMs),
        eventLoopLagP99Ms: round(afterHalfLoad.lagP99Ms),
        minorGcMeanMs: afterHalfLoad.minorGcs > afterSaturation.minorGcs ? round((1000 * (afterHalfLoad.minorGcSeconds - afterSaturation.minorGcSeconds)) / (afterHalfLoad.minorGcs - afterSaturation.minorGcs)) : null,
        // The event loop's CPU per request (Linux), the hypervisor's share of the machine meanwhile, and how
        // late the load generator's own ticks ran (a late tick sends a burst).
        eventLoopMicrosPerRequest: loopMicrosPerRequest,
        stealPct: halfLoadSteal,
        generatorTickLateMaxMs: round(halfLoad.tickLateMaxMs),
      },
      // The control server (bench/control.ts) with a worker-thread round trip per request, paced alike.
      halfLoadFloor: floor,
      httpCeilingClientBatchedRequestsPerSec: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, Math.round(clientBatchedBound[size]!.ceilingRequestsPerSec)])),
      // Batching on against off at the SAME instance count, measured in every round.
      naiveImagesPerSec: Math.round(mean(naives.map((n) => n.imagesPerSec))),
      batchingGain: round(mean(rounds.map((r, i) => r.json.imagesPerSec / naives[i]!.imagesPerSec))),
      // Served one-image JSON with one instance per core over the plan's instances (both batched), apart from batching.
      instanceGain:
        perCore === undefined
          ? null
          : {
              instances: cores,
              imagesPerSec: Math.round(perCore.imagesPerSec),
              gain: round(perCore.imagesPerSec / mean(rounds.map((r) => r.json.imagesPerSec))),
              // serve.instances = cores for client-batched traffic, against the best raw engine throughput.
              clientBatchedVsRaw: Object.fromEntries(Object.entries(perCoreBatched).map(([size, l]) => [size, {imagesPerSec: Math.round(l.imagesPerSec), value: round(l.imagesPerSec / raw)}])),
            },
      meanBatchSizeAtSaturation: round((best.batches.after.sum - best.batches.before.sum) / (best.batches.after.count - best.batches.before.count)),
      meanBatchSizeAtHalfLoad: round((afterHalfLoad.sum - afterSaturation.sum) / (afterHalfLoad.count - afterSaturation.count)),
      rounds: rounds.map((r, i) => ({
        rawBatchedImagesPerSec: {onnxruntime: Math.round(raws[i]!.onnxruntime), tfjs: Math.round(raws[i]!.tfjs)},
        servedImagesPerSec: Math.round(r.json.imagesPerSec),
        servedBinaryImagesPerSec: Math.round(r.binary.imagesPerSec),
        servedClientBatchedImagesPerSec: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, Math.round(r.clientBatched[size]!.imagesPerSec)])),
        naiveImagesPerSec: Math.round(naives[i]!.imagesPerSec),
      })),
      servedB64PngImagesPerSec: Math.round(b64.imagesPerSec),
      // The same server on TensorFlow.js (serve.runtime tfjs), so the gain is visible.
      tfjs: {
        rawBatchedImagesPerSec: Math.round(mean(raws.map((r) => r.tfjs))),
        servedImagesPerSec: Math.round(tfjsServed.json.imagesPerSec),
        servedClientBatchedImagesPerSec: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, Math.round(tfjsServed.clientBatched[size]!.imagesPerSec)])),
        naiveImagesPerSec: Math.round(tfjsNaive.imagesPerSec),
        batchingGain: round(tfjsServed.json.imagesPerSec / tfjsNaive.imagesPerSec),
      },
      failedRequests:
        rounds.reduce((n, r) => n + failures(r.json, r.binary, ...Object.values(r.clientBatched)), 0) +
        failures(...naives, ...(perCore ? [perCore] : []), b64, tfjsServed.json, tfjsServed.binary, ...Object.values(tfjsServed.clientBatched), tfjsNaive) +
        halfLoad.failed,
      // The KServe Python ModelServer serving the same model.onnx with Python onnxruntime (bench/peers/kserve_server.py).
      peerServedImagesPerSec: peer ? Math.round(peer.json.imagesPerSec) : null,
      vsPeer: peer ? round(mean(rounds.map((r) => r.json.imagesPerSec)) / peer.json.imagesPerSec) : null,
      peer: peer
        ? {
            server: `KServe Python ModelServer ${peer.versions.kserve} (FastAPI on uvicorn, V2 REST), Python onnxruntime ${peer.versions.onnxruntime}`,
            processes: 1,
            onnxThreads: peerThreads,
            dynamicBatching: false,
            perRequestLogging: false,
            servedImagesPerSec: Math.round(peer.json.imagesPerSec),
            servedClientBatchedImagesPerSec: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, Math.round(peer!.clientBatched[size]!.imagesPerSec)])),
            vsPeerClientBatched: Object.fromEntries(CLIENT_BATCHES.map((size) => [size, round(mean(rounds.map((r) => r.clientBatched[size]!.imagesPerSec)) / peer!.clientBatched[size]!.imagesPerSec)])),
            // Paced at ml's half-load rate (client-side timing, as ml's p50Ms/p99Ms).
            halfLoad: {requestsPerSec: Math.round(peer.halfLoad.requestsPerSec), p50Ms: round(percentile(peer.halfLoad.latencies, 50)), p99Ms: round(percentile(peer.halfLoad.latencies, 99)), failed: peer.halfLoad.failed},
            ownHalfLoad: {targetRequestsPerSec: peer.ownHalfRate, requestsPerSec: Math.round(peer.ownHalfLoad.requestsPerSec), p50Ms: round(percentile(peer.ownHalfLoad.latencies, 50)), p99Ms: round(percentile(peer.ownHalfLoad.latencies, 99)), failed: peer.ownHalfLoad.failed},
            failedRequests: failures(peer.json, ...Object.values(peer.clientBatched)),
          }
        : {skipped: peerSkipped},
      loadAverageAtStart: round(loadAverage),
      loadAverageAtEnd: round(os.loadavg()[0]!),
      // Linux pressure stall information: the share of the last minute some runnable task waited for a CPU.
      cpuPressureAtStart: cpuPressureStart,
      cpuPressureAtEnd: await cpuPressure(),
      seconds: Math.round((performance.now() - started) / 1000),
    }
    process.stdout.write(JSON.stringify(result, null, 2) + '\n')
  } finally {
    await cleanup()
  }
}

await main()
