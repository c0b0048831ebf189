// Monitor test fixtures: expositions written by the server's own ServeMetrics class (so the monitor is
// tested against the names the server really exports), a fixed-text /metrics server, and a live `ml serve`.
import {readdir, readFile} from 'node:fs/promises'
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import path from 'node:path'
import {ServeMetrics} from '../../src/lib/serve/metrics.js'
import {parseExposition} from '../../src/lib/monitor/prom-text.js'
import type {ScrapeResult} from '../../src/lib/monitor/scrape.js'
import {runJson, startCli, type CliResult} from './cli.js'
import {mnistFolders, writeMnistConfig} from './fixtures.js'

/** A ServeMetrics without process metrics (deterministic text), filled by `fill`. */
export function serveMetrics(fill: (m: ServeMetrics) => void = () => {}): ServeMetrics {
  const m = new ServeMetrics({defaultMetrics: false})
  fill(m)
  return m
}

/** A scrape result as scrape() returns it, from a metrics object at a given time. */
export async function scrapeOf(target: string, m: ServeMetrics, at: number, extra = ''): Promise<ScrapeResult> {
  const text = (await m.registry.metrics()) + extra
  return {target, url: `${target}/metrics`, at, durationMs: 1, expo: parseExposition(text)}
}

/** Records one model request the way the server does (request counter, duration, Triton counters). */
export function request(m: ServeMetrics, model: string, version: string, status: number, seconds: number, protocol = 'raw'): void {
  m.requests.inc({model, version, protocol, status: String(status)})
  m.requestDuration.observe({model, version, protocol}, seconds)
  m.inferenceRequest(model, version, status < 400, seconds)
}

export interface TextServer {
  url: string
  setText(text: string): void
  close(): Promise<void>
}

/** An HTTP server answering GET /metrics with whatever text was set last. */
export async function startTextServer(text = ''): Promise<TextServer> {
  let body = text
  const server = http.createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, {'content-type': 'text/plain; version=0.0.4'}).end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    setText: (t) => (body = t),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

export interface TrainedModel {
  dir: string
  config: string
  name: string
  runDir: string
  runId: string
}

/** Real MNIST digits through the CLI: ingest, train (a small MLP) and export. */
export async function trainModel(dir: string, options: {train?: number; test?: number; epochs?: number; monitor?: Record<string, unknown>} = {}): Promise<TrainedModel> {
  await mnistFolders(dir, options.train ?? 400, options.test ?? 100)
  const config = await writeMnistConfig(dir, {model: {preset: 'mlp'}, train: {epochs: options.epochs ?? 2, batchSize: 32}})
  if (options.monitor) {
    const {parse, stringify} = await import('yaml')
    const {writeFile} = await import('node:fs/promises')
    const parsed = parse(await readFile(config, 'utf8')) as Record<string, unknown>
    parsed.monitor = options.monitor
    await writeFile(config, stringify(parsed))
  }
  let train: {runId: string; runDir: string} | undefined
  for (const command of ['ingest', 'train', 'export']) {
    const result = await runJson<{runId: string; runDir: string}>([command, '--config', config])
    if (result.code !== 0) throw new Error(`ml ${command} failed (${result.code}): ${JSON.stringify(result.json)}\n${result.stderr}`)
    if (command === 'train') train = result.json
  }
  return {dir, config, name: 'digits', runDir: train!.runDir, runId: train!.runId}
}

export interface ServeProcess {
  url: string
  child: ReturnType<typeof startCli>['child']
  done: Promise<CliResult>
  stop(): Promise<CliResult>
}

/** `ml serve --config <config> --port 0` as a child process; resolves once it logged `listening`. */
export async function startServe(config: string, extra: string[] = []): Promise<ServeProcess> {
  const {child, done} = startCli(['serve', '--config', config, '--port', '0', '--instances', '1', ...extra])
  let stderr = ''
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (d: Buffer | string) => {
      stderr += d.toString()
      const match = /"event":"listening"[^\n]*"url":"([^"]+)"/.exec(stderr)
      if (match) {
        child.stderr!.off('data', onData)
        resolve(match[1]!)
      }
    }
    child.stderr!.on('data', onData)
    void done.then((r) => reject(new Error(`ml serve exited (${r.code ?? r.signal}) before listening:\n${stderr}`)))
  })
  return {
    url,
    child,
    done,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      return done
    },
  }
}

/** The first `perClass` MNIST test PNGs of each class written by mnistFolders. */
export async function testImages(dir: string, perClass = 1, classes = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']): Promise<Array<{label: string; png: Buffer}>> {
  const out: Array<{label: string; png: Buffer}> = []
  for (const label of classes) {
    const folder = path.join(dir, 'data', 'test', label)
    for (const file of (await readdir(folder)).sort().slice(0, perClass)) out.push({label, png: await readFile(path.join(folder, file))})
  }
  return out
}

/** POSTs each image to the raw :classify endpoint, one request at a time; returns the statuses. */
export async function classify(url: string, model: string, images: Array<{png: Buffer}>): Promise<number[]> {
  const statuses: number[] = []
  for (const image of images) {
    const response = await fetch(`${url}/v1/models/${model}:classify`, {method: 'POST', headers: {'content-type': 'image/png'}, body: image.png})
    await response.arrayBuffer()
    statuses.push(response.status)
  }
  return statuses
}
