// Serving fixtures: a real model trained and exported by the CLI on MNIST digits, test images, a
// plain HTTP client, and `ml serve` started as a child process that reports its port.
import {readdir, readFile, writeFile} from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import path from 'node:path'
import {Writable} from 'node:stream'
import {parse, stringify} from 'yaml'
import {initEngine} from '../../src/lib/engine/backend.js'
import {JsonLog} from '../../src/lib/serve/log.js'
import {serveOptions, type ServeOptions} from '../../src/lib/serve/options.js'
import {Predictor} from '../../src/lib/serve/predictor.js'
import {startServer, type ServeHandle} from '../../src/lib/serve/server.js'
import {runJson, startCli, type CliResult} from './cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from './fixtures.js'

export interface ServeModel {
  dir: string
  config: string
  name: string
  repository: string
  versionDir: string
}

/**
 * Writes MNIST class folders, a config (with `serve` settings merged in), and runs ingest, train and
 * export through the CLI: a real exported model, as users get one.
 */
export async function trainServeModel(dir: string, options: {preset?: string; train?: number; test?: number; epochs?: number; batchSize?: number; name?: string; serve?: Record<string, unknown>} = {}): Promise<ServeModel> {
  await mnistFolders(dir, options.train ?? 300, options.test ?? 100)
  const name = options.name ?? 'digits'
  const config = await writeMnistConfig(dir, {name, model: {preset: options.preset ?? 'mlp'}, train: {epochs: options.epochs ?? 1, batchSize: options.batchSize ?? 32}})
  if (options.serve) await setServeConfig(config, options.serve)
  for (const command of ['ingest', 'train', 'export']) {
    const result = await runJson<{dir?: string}>([command, '--config', config])
    if (result.code !== 0) throw new Error(`ml ${command} failed (${result.code}): ${JSON.stringify(result.json)}\n${result.stderr}`)
  }
  const repository = path.join(dir, 'models')
  return {dir, config, name, repository, versionDir: path.join(repository, name, '1')}
}

/** Replaces the config's serve section. */
export async function setServeConfig(config: string, serve: Record<string, unknown>): Promise<void> {
  const parsed = parse(await readFile(config, 'utf8')) as Record<string, unknown>
  parsed.serve = serve
  await writeFile(config, stringify(parsed))
}

/** The first `perClass` test digits of each class (PNG files written by mnistFolders). */
export async function testDigits(dir: string, perClass = 1): Promise<Array<{label: string; png: Buffer}>> {
  const digits: Array<{label: string; png: Buffer}> = []
  for (let label = 0; label < 10; label++) {
    const folder = path.join(dir, 'data', 'test', String(label))
    for (const file of (await readdir(folder)).sort().slice(0, perClass)) digits.push({label: String(label), png: await readFile(path.join(folder, file))})
  }
  return digits
}

export interface HttpResult {
  status: number
  headers: http.IncomingHttpHeaders
  text: string
  /** The body's bytes (binary tensor data comes after the JSON). */
  body: Buffer
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: any
}

export interface RequestOptions {
  method?: string
  headers?: Record<string, string>
  body?: string | Buffer | object
  /** false: a new connection for this request alone. */
  agent?: http.Agent | false
  ca?: Buffer
}

/** One HTTP(S) request; objects are sent as JSON. Never throws for an HTTP status. */
export function request(url: string, options: RequestOptions = {}): Promise<HttpResult> {
  const body = options.body === undefined ? undefined : Buffer.isBuffer(options.body) || typeof options.body === 'string' ? options.body : JSON.stringify(options.body)
  const headers: Record<string, string> = {...options.headers}
  if (options.body !== undefined && !Buffer.isBuffer(options.body) && typeof options.body !== 'string' && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
    headers['Content-Type'] = 'application/json'
  }
  const lib = url.startsWith('https:') ? https : http
  return new Promise((resolve, reject) => {
    const req = lib.request(url, {method: options.method ?? (body === undefined ? 'GET' : 'POST'), headers, agent: options.agent, ca: options.ca}, (res) => {
      readResponse(res).then(resolve, reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

function readResponse(res: http.IncomingMessage): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    res.on('data', (chunk: Buffer) => chunks.push(chunk))
    res.on('end', () => {
      const raw = Buffer.concat(chunks)
      const text = raw.toString('utf8')
      let json: unknown
      try {
        json = text ? JSON.parse(text) : undefined
      } catch {
        json = undefined
      }
      resolve({status: res.statusCode!, headers: res.headers, text, body: raw, json})
    })
    res.on('error', reject)
  })
}

export interface HeldRequest {
  /** Sends the rest of the body. */
  finish(): void
  response: Promise<HttpResult>
}

/**
 * A JSON POST on a connection of its own that sends its headers and the first bytes of the body, then
 * holds the rest back until finish(): a request the server has in flight for as long as the test likes.
 */
export function heldRequest(url: string, body: string): HeldRequest {
  const req = http.request(url, {method: 'POST', agent: false, headers: {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body)}})
  const response = new Promise<HttpResult>((resolve, reject) => {
    req.on('response', (res) => readResponse(res).then(resolve, reject))
    req.on('error', reject)
  })
  req.write(body.slice(0, 100))
  return {finish: () => req.end(body.slice(100)), response}
}

/** A KServe V2 infer body with FP32 tensors for `images` (each 784 floats of one 28x28 digit). */
export function fp32Body(images: Float32Array[]): object {
  const data: number[] = []
  for (const image of images) for (const v of image) data.push(v)
  return {inputs: [{name: 'image', shape: [images.length, 28, 28, 1], datatype: 'FP32', data}]}
}

export interface ServeChild {
  url: string
  port: number
  child: ReturnType<typeof startCli>['child']
  done: Promise<CliResult>
  /** stderr so far (JSON event lines and the human notes). */
  stderr(): string
  stdout(): string
  /** Resolves with the first stderr JSON event matching `test` (already seen, or to come). */
  waitForEvent(test: (event: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
}

/** Starts `ml serve ...args` and resolves once it logs its `listening` event. */
export async function startServe(args: string[], options: {cwd?: string; env?: NodeJS.ProcessEnv} = {}): Promise<ServeChild> {
  const {child, done} = startCli(['serve', ...args], options)
  let stderr = ''
  let stdout = ''
  const events: Array<Record<string, unknown>> = []
  const listeners = new Set<() => void>()
  child.stdout!.on('data', (d: Buffer | string) => (stdout += d.toString()))
  let partial = ''
  child.stderr!.on('data', (d: Buffer | string) => {
    stderr += d.toString()
    const lines = (partial + d.toString()).split('\n')
    partial = lines.pop()!
    for (const line of lines) {
      if (!line.startsWith('{')) continue
      try {
        events.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        // Not an event line.
      }
    }
    for (const listener of [...listeners]) listener()
  })
  const waitForEvent = (test: (event: Record<string, unknown>) => boolean) => new Promise<Record<string, unknown>>((resolve, reject) => {
    const check = () => {
      const found = events.find(test)
      if (found === undefined) return false
      listeners.delete(check)
      resolve(found)
      return true
    }
    if (check()) return
    listeners.add(check)
    void done.then((result) => {
      if (listeners.delete(check)) reject(new Error(`ml serve exited (${result.code ?? result.signal}) before the awaited event:\n${result.stderr}`))
    })
  })
  const listening = await waitForEvent((e) => e.event === 'listening')
  return {url: listening.url as string, port: listening.port as number, child, done, stderr: () => stderr, stdout: () => stdout, waitForEvent}
}

/**
 * The reference for served answers: the same model and preprocessing loaded in this process (wasm),
 * each digit preprocessed, and the probabilities of all of them as one batch.
 */
export async function referencePredictions(versionDir: string, digits: Array<{label: string; png: Buffer}>): Promise<{predictor: Predictor; floats: Float32Array[]; expected: Float32Array}> {
  await initEngine('wasm')
  const predictor = await Predictor.load(versionDir)
  const floats = await Promise.all(digits.map((d) => predictor.preprocess(d.png, d.label)))
  const size = floats[0]!.length
  const all = new Float32Array(floats.length * size)
  floats.forEach((f, i) => all.set(f, i * size))
  return {predictor, floats, expected: await predictor.predictBatch(all, floats.length)}
}

/** An in-process server on a freshly trained `digits` model, and what that model answers in process. */
export interface DigitsServer {
  server: ServeHandle
  /** One real MNIST test digit per class. */
  digits: Array<{label: string; png: Buffer}>
  /** The digits preprocessed, and the model's probabilities for all of them as one batch. */
  floats: Float32Array[]
  expected: Float32Array
  /** Stops the server and removes the model and its folder. */
  close(): Promise<void>
}

/**
 * Trains and exports `digits` in a temp folder named from `prefix`, serves it with startServer
 * (one wasm instance, batches of 10, 256 KB bodies, no polling, no access log; `overrides` on
 * top), and loads the reference answers.
 */
export async function startDigitsServer(prefix: string, overrides: Partial<ServeOptions> = {}): Promise<DigitsServer> {
  const temp = await tempDir(prefix)
  let server: ServeHandle | undefined
  let predictor: Predictor | undefined
  const close = async () => {
    await server?.close()
    predictor?.dispose()
    await temp.cleanup()
  }
  try {
    const model = await trainServeModel(temp.dir)
    const digits = await testDigits(temp.dir, 1)
    server = await startServer(serveOptions({
      repository: model.repository,
      models: [{name: 'digits', labels: {}}],
      port: 0,
      instances: 1,
      maxBatchSize: 10,
      maxBodyBytes: 256 * 1024,
      pollIntervalMs: 0,
      accessLog: 'off',
      engine: 'wasm',
      imageLimits: {maxPixels: 100_000, maxFileBytes: 20_000},
      ...overrides,
    }), {log: new JsonLog(undefined)})
    const reference = await referencePredictions(model.versionDir, digits)
    predictor = reference.predictor
    return {server, digits, floats: reference.floats, expected: reference.expected, close}
  } catch (error) {
    await close()
    throw error
  }
}

export interface CapturedLog {
  log: JsonLog
  events: Array<Record<string, unknown>>
  /** Resolves with the first event matching `test` (already logged, or to come). */
  waitFor(test: (event: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
}

/** A server log kept in memory, one parsed event per line, for tests that check what was logged. */
export function captureLog(): CapturedLog {
  const events: Array<Record<string, unknown>> = []
  const waiters = new Set<() => void>()
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') events.push(JSON.parse(line) as Record<string, unknown>)
      for (const waiter of [...waiters]) waiter()
      callback()
    },
  })
  const waitFor = (test: (event: Record<string, unknown>) => boolean) => new Promise<Record<string, unknown>>((resolve) => {
    const check = () => {
      const found = events.find(test)
      if (found === undefined) return
      waiters.delete(check)
      resolve(found)
    }
    waiters.add(check)
    check()
  })
  return {log: new JsonLog(stream), events, waitFor}
}
