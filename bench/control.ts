// The do-nothing server bench:serve measures against: it parses the same request bodies (one-image
// JSON, or KServe binary tensor data) and answers fixed probabilities, with no model, scheduler,
// metrics or log. At saturation it is the HTTP ceiling of this machine; paced, with `hop`, each
// request also makes the round trip to a worker thread that any server with an inference thread
// makes, which gives the half-load latency floor. With `engine`, the worker threads run the real
// ONNX model (ml's engine, with ml's session options) on batches of whatever is queued when one is
// free: the least a server with batching and an inference thread does, which is the most serving can
// reach on this machine. Also: what the machine did meanwhile (Linux).
import {spawn} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import http from 'node:http'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {isMainThread, parentPort, Worker, workerData} from 'node:worker_threads'
import {loadOnnxModel} from '../src/lib/model/runtimes/onnx.js'

export interface ControlServer {
  url: string
  pid: number
  /**
   * Stops the server; resolves with the milliseconds of each request it answered, received to sent,
   * of those answered at or after `sinceEpochMs` (default: all).
   */
  stop(sinceEpochMs?: number): Promise<number[]>
}

/** The real model in the control's worker threads: ONNX Runtime with `threads` intra-op threads in each of `instances`. */
export interface ControlEngine {
  onnxFile: string
  /** Height, width, channels of an image. */
  inputShape: [number, number, number]
  instances: number
  threads: number
  /** Images per batch at most (serve.maxBatchSize). */
  maxBatchSize: number
}

/** Starts the control server in a process of its own (as `ml serve` runs in its own). */
export async function startControl(options: {hop: boolean; timingsFile: string; engine?: ControlEngine}): Promise<ControlServer> {
  const mode = options.engine ? 'engine' : options.hop ? 'hop' : 'direct'
  const args = [fileURLToPath(import.meta.url), mode, options.timingsFile, ...(options.engine ? [JSON.stringify(options.engine)] : [])]
  const child = spawn(process.execPath, args, {stdio: ['ignore', 'pipe', 'inherit']})
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))
    child.once('exit', (code) => reject(new Error(`the control server exited (${code})`)))
  })
  // Once: a second stop() (after a failure) must not wait for an exit that has already happened.
  let stopped: Promise<Array<[number, number]>> | undefined
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    async stop(sinceEpochMs = Number.NEGATIVE_INFINITY) {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((resolve) => child.once('exit', resolve))
          child.kill('SIGTERM')
          await exited
        }
        return JSON.parse(await readFile(options.timingsFile, 'utf8')) as Array<[number, number]>
      })()
      return (await stopped).filter(([at]) => at >= sinceEpochMs).map(([, ms]) => ms)
    },
  }
}

/** CPU milliseconds the process's main thread has run so far (Linux schedstat; undefined elsewhere). */
export function mainThreadCpuMs(pid: number): number | undefined {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6
  } catch {
    return undefined
  }
}

/** CPU time counters of the whole machine (Linux /proc/stat: total and stolen by the hypervisor). */
export function machineTicks(): {total: number; steal: number} | undefined {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
    return {total: fields.reduce((a, b) => a + b, 0), steal: fields[7] ?? 0}
  } catch {
    return undefined
  }
}

/** The share (%) of all CPU time between two readings that the hypervisor took from this machine. */
export function stealPct(before: ReturnType<typeof machineTicks>, after: ReturnType<typeof machineTicks>): number | null {
  if (before === undefined || after === undefined || after.total === before.total) return null
  return Math.round((1000 * (after.steal - before.steal)) / (after.total - before.total)) / 10
}

const PROBABILITIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.1]

interface Queued {
  n: number
  input: Float32Array
  answer: (output: Float32Array) => void
}

/** Worker threads running the model, fed greedily: a free one takes what is queued, up to maxBatchSize images. */
async function engineWorkers(engine: ControlEngine): Promise<(item: Queued) => void> {
  const queue: Queued[] = []
  const free: Worker[] = []
  const running = new Map<Worker, Queued[]>()
  const next = () => {
    while (free.length > 0 && queue.length > 0) {
      const batch: Queued[] = []
      let n = 0
      while (queue.length > 0 && (batch.length === 0 || n + queue[0]!.n <= engine.maxBatchSize)) {
        const item = queue.shift()!
        batch.push(item)
        n += item.n
      }
      const input = new Float32Array(n * (batch[0]!.input.length / batch[0]!.n))
      let offset = 0
      for (const item of batch) {
        input.set(item.input, offset)
        offset += item.input.length
      }
      const worker = free.pop()!
      running.set(worker, batch)
      worker.postMessage({n, input}, [input.buffer])
    }
  }
  const workers = await Promise.all(Array.from({length: engine.instances}, () => new Promise<Worker>((resolve, reject) => {
    const worker = new Worker(fileURLToPath(import.meta.url), {workerData: engine})
    worker.once('error', reject)
    worker.once('message', () => resolve(worker))
  })))
  for (const worker of workers) {
    free.push(worker)
    worker.on('message', (output: Float32Array) => {
      const batch = running.get(worker)!
      running.delete(worker)
      free.push(worker)
      const perImage = output.length / batch.reduce((sum, item) => sum + item.n, 0)
      let offset = 0
      for (const item of batch) {
        item.answer(output.subarray(offset, offset + perImage * item.n))
        offset += perImage * item.n
      }
      next()
    })
  }
  return (item) => {
    queue.push(item)
    next()
  }
}

/** A control worker thread with the model: answers each batch with its output. */
async function engineThread(engine: ControlEngine): Promise<void> {
  const model = await loadOnnxModel(engine.onnxFile, engine.inputShape, {threads: engine.threads})
  parentPort!.on('message', (m: {n: number; input: Float32Array}) => {
    void model.run(m.input, m.n).then((output) => {
      const out = output.slice()
      parentPort!.postMessage(out, [out.buffer])
    })
  })
  parentPort!.postMessage('ready')
}

/** The server itself: control.js <hop|direct|engine> <timings.json> [engine JSON]. */
async function serveControl(mode: 'hop' | 'direct' | 'engine', timingsFile: string, engine: ControlEngine | undefined): Promise<void> {
  /** [answered at (epoch ms), milliseconds from received to sent] per request. */
  const timings: Array<[number, number]> = []
  const waiting = new Map<number, () => void>()
  let nextId = 0
  const worker = mode === 'hop'
    ? new Worker("const {parentPort} = require('node:worker_threads'); parentPort.on('message', (m) => { const out = new Float32Array(m.n * 10); parentPort.postMessage({id: m.id, out}, [out.buffer]) })", {eval: true})
    : undefined
  worker?.on('message', (m: {id: number}) => {
    const done = waiting.get(m.id)!
    waiting.delete(m.id)
    done()
  })
  const infer = engine ? await engineWorkers(engine) : undefined
  const server = http.createServer((req, res) => {
    const started = performance.now()
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const split = req.headers['inference-header-content-length']
      let input: Float32Array
      let n = 1
      if (typeof split === 'string') {
        const head = JSON.parse(body.subarray(0, Number(split)).toString('utf8')) as {inputs: Array<{shape: number[]}>}
        n = head.inputs[0]!.shape[0]!
        input = new Float32Array((body.length - Number(split)) / 4)
        new Uint8Array(input.buffer).set(body.subarray(Number(split)))
      } else {
        const request = JSON.parse(body.toString('utf8')) as {inputs: Array<{data: number[]}>}
        input = new Float32Array(request.inputs[0]!.data)
      }
      const answer = (output?: Float32Array) => {
        const data = output ? Array.from(output) : Array.from({length: n}, () => PROBABILITIES).flat()
        const reply = JSON.stringify({model_name: 'control', model_version: '1', outputs: [{name: 'probabilities', datatype: 'FP32', shape: [n, 10], data}]})
        res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(reply)})
        res.end(reply)
        res.once('close', () => {
          const now = performance.now()
          timings.push([performance.timeOrigin + now, now - started])
        })
      }
      if (infer !== undefined) return infer({n, input, answer})
      if (worker === undefined) return answer()
      const id = nextId++
      waiting.set(id, answer)
      worker.postMessage({id, n, input}, [input.buffer as ArrayBuffer])
    })
  })
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as {port: number}).port}\n`))
  process.once('SIGTERM', () => {
    void writeFile(timingsFile, JSON.stringify(timings)).then(() => process.exit(0))
  })
}

if (!isMainThread && (workerData as ControlEngine | undefined)?.onnxFile !== undefined) {
  await engineThread(workerData as ControlEngine)
} else if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const mode = process.argv[2] === 'hop' || process.argv[2] === 'engine' ? process.argv[2] : 'direct'
  await serveControl(mode, process.argv[3]!, mode === 'engine' ? (JSON.parse(process.argv[4]!) as ControlEngine) : undefined)
}
