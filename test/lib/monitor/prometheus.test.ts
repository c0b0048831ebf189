// configs/monitoring against a real Prometheus: promtool checks, the names in the dashboard and rules
// against what the server and the ingest export, and every PromQL expression run on live scrapes.
import assert from 'node:assert/strict'
import {spawn, spawnSync, type ChildProcess} from 'node:child_process'
import {existsSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {parse, stringify} from 'yaml'
import {serveIngestMetrics, type IngestMetricsServer} from '../../../src/lib/data/kafka-metrics.js'
import {histogramOf, histogramQuantile} from '../../../src/lib/monitor/histogram.js'
import {scrape} from '../../../src/lib/monitor/scrape.js'
import {ServeMetrics} from '../../../src/lib/serve/metrics.js'
import {ROOT} from '../../support/cli.js'
import {tempDir} from '../../support/fixtures.js'
import {classify, startServe, testImages, trainModel, type ServeProcess} from '../../support/monitor-fixtures.js'

const PROMETHEUS = '/usr/bin/prometheus'
const PROMTOOL = '/usr/bin/promtool'
const MONITORING = path.join(ROOT, 'configs', 'monitoring')
const installed = existsSync(PROMETHEUS) && existsSync(PROMTOOL)
const skip = installed ? false : `${PROMETHEUS} is not installed (Debian/Ubuntu: apt-get install -y prometheus)`
if (!installed) console.log(`# skipping the Prometheus tests: ${skip}`)

interface Dashboard {
  panels: Array<{type: string; title: string; targets?: Array<{expr: string}>}>
  templating: {list: Array<{name: string; definition: string}>}
}

interface RuleFile {
  groups: Array<{name: string; rules: Array<{alert: string; expr: string}>}>
}

async function dashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(path.join(MONITORING, 'grafana-dashboard.json'), 'utf8')) as Dashboard
}

async function rules(): Promise<RuleFile> {
  return parse(await readFile(path.join(MONITORING, 'rules.yml'), 'utf8')) as RuleFile
}

/** Dashboard queries with Grafana's variables filled in as "all" and a rate window Prometheus can answer. */
async function dashboardQueries(): Promise<Array<{title: string; expr: string}>> {
  const d = await dashboard()
  return d.panels.flatMap((p) => (p.targets ?? []).map((t) => ({
    title: p.title,
    expr: t.expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.*').replaceAll('$model', '.*').replaceAll('$ingest_job', '.*'),
  })))
}

/** Alert expressions without their final threshold comparison (`... > 0.01`): what they measure. */
async function alertQueries(): Promise<Array<{title: string; expr: string}>> {
  const r = await rules()
  return r.groups.flatMap((g) => g.rules.map((rule) => {
    const inner = rule.expr.trim().replace(/\s*(==|!=|>=|<=|>|<)\s*[-+]?\d+(\.\d+)?(e[-+]?\d+)?\s*$/i, '')
    assert.notEqual(inner, rule.expr.trim(), `alert ${rule.alert} should end with a threshold comparison`)
    return {title: rule.alert, expr: inner}
  }))
}

/** Every metric name that the server's ServeMetrics (with process metrics) and the ingest metrics export. */
async function exportedNames(): Promise<Set<string>> {
  const names = new Set<string>(['up'])
  const {ingestMetrics} = await import('../../../src/lib/data/kafka-metrics.js')
  const registries = [new ServeMetrics().registry, ingestMetrics().registry]
  for (const registry of registries) {
    for (const metric of await registry.getMetricsAsJSON()) {
      names.add(metric.name)
      if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(metric.name + suffix)
    }
    registry.clear()
  }
  return names
}

function metricTokens(expr: string): string[] {
  // Metric names are the identifiers with our prefixes (label names and functions have none).
  return [...expr.matchAll(/\b(?:ml|nv|process|nodejs)_[a-zA-Z0-9_]+/g)].map((m) => m[0])
}

describe('configs/monitoring', () => {
  it('uses exactly the metric names the server and the ingest export', async () => {
    const names = await exportedNames()
    const queries = [...(await dashboardQueries()), ...(await alertQueries())]
    const d = await dashboard()
    const definitions = d.templating.list.map((v) => ({title: `variable ${v.name}`, expr: v.definition}))
    const used = new Set<string>()
    for (const q of [...queries, ...definitions]) {
      for (const token of metricTokens(q.expr)) {
        assert.ok(names.has(token), `${q.title}: ${token} is not exported by ml serve or ml ingest`)
        used.add(token)
      }
      assert.doesNotMatch(q.expr.replace(/label_values\([^)]*\)/, ''), /\$/, `${q.title}: an unreplaced variable`)
    }
    for (const name of ['ml_serve_requests_total', 'ml_serve_request_duration_seconds_bucket', 'ml_serve_queue_duration_seconds_bucket', 'ml_serve_inference_duration_seconds_bucket', 'ml_serve_batch_size_sum', 'ml_serve_queue_depth', 'ml_serve_in_flight_requests', 'nv_inference_count', 'ml_serve_predictions_total', 'ml_serve_input_brightness_bucket', 'process_cpu_seconds_total', 'process_resident_memory_bytes', 'ml_ingest_kafka_lag', 'ml_ingest_records_consumed_total', 'ml_ingest_rejects_total']) {
      assert.ok(used.has(name), `the dashboard or the alerts should show ${name}`)
    }
    assert.ok(queries.length >= 40, `${queries.length} queries`)
  })

  it('promtool checks the config and the rules', {skip}, () => {
    const config = spawnSync(PROMTOOL, ['check', 'config', path.join(MONITORING, 'prometheus.yml')], {encoding: 'utf8'})
    assert.equal(config.status, 0, config.stdout + config.stderr)
    assert.match(config.stdout + config.stderr, /SUCCESS: 1 rule files found/)
    const checked = spawnSync(PROMTOOL, ['check', 'rules', path.join(MONITORING, 'rules.yml')], {encoding: 'utf8'})
    assert.equal(checked.status, 0, checked.stdout + checked.stderr)
    assert.match(checked.stdout, /SUCCESS: 10 rules found/)
  })
})

async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** Polls `probe` until it returns a value, at most `timeoutMs`; an external process is being waited for. */
async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined) return value
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

interface QueryResult {
  status: string
  error?: string
  data: {resultType: string; result: Array<{metric: Record<string, string>; value: [number, string]}>}
}

describe('a real Prometheus scraping a live ml serve', {skip}, () => {
  let dir: string
  let cleanup: () => Promise<void>
  let serve: ServeProcess
  let ingest: IngestMetricsServer
  let prometheus: ChildProcess
  let prometheusLog = ''
  let api: string
  let sent = 0

  const query = async (expr: string): Promise<QueryResult> => {
    const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`)
    return (await response.json()) as QueryResult
  }
  /** Resolves once Prometheus's last scrape of the server has seen `count` raw requests. */
  const scraped = (count: number) =>
    until(`Prometheus to scrape ${count} requests (log:\n${prometheusLog})`, 20_000, async () => {
      const r = await query('sum(ml_serve_requests_total{job="ml-serve", protocol="raw"})')
      return r.data.result.length && Number(r.data.result[0]!.value[1]) === count ? true : undefined
    })
  /** Resolves after one more scrape of the server than the current one. */
  const nextScrape = async () => {
    const stamp = async () => Number((await query('timestamp(up{job="ml-serve"})')).data.result[0]?.value[1] ?? 0)
    const now = await stamp()
    await until('the next scrape', 10_000, async () => ((await stamp()) > now ? true : undefined))
  }

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-prometheus-'))
    const model = await trainModel(dir, {train: 300, test: 50, epochs: 1})
    serve = await startServe(model.config)
    ingest = await serveIngestMetrics(0)
    const port = await freePort()
    api = `http://127.0.0.1:${port}`
    const config = parse(await readFile(path.join(MONITORING, 'prometheus.yml'), 'utf8')) as {
      global: Record<string, string>
      rule_files: string[]
      scrape_configs: Array<{job_name: string; static_configs: Array<{targets: string[]}>}>
    }
    config.global.scrape_interval = '1s'
    config.global.evaluation_interval = '1s'
    config.rule_files = [path.join(MONITORING, 'rules.yml')]
    const targets: Record<string, string> = {'ml-serve': new URL(serve.url).host, 'ml-ingest': `127.0.0.1:${ingest.port}`}
    for (const job of config.scrape_configs) job.static_configs = [{targets: [targets[job.job_name]!]}]
    const file = path.join(dir, 'prometheus.yml')
    await writeFile(file, stringify(config))
    prometheus = spawn(PROMETHEUS, [`--config.file=${file}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], {stdio: ['ignore', 'pipe', 'pipe']})
    prometheus.stdout!.on('data', (d: Buffer) => (prometheusLog += d.toString()))
    prometheus.stderr!.on('data', (d: Buffer) => (prometheusLog += d.toString()))
    await until(`Prometheus /-/ready (log:\n${prometheusLog})`, 30_000, async () => ((await fetch(`${api}/-/ready`)).ok ? true : undefined))
    await until('the first scrapes of both jobs', 20_000, async () => {
      const r = await query('up')
      return r.data.result.length === 2 && r.data.result.every((s) => s.value[1] === '1') ? true : undefined
    })

    // Two rounds of traffic, each seen by a scrape, so that rates have an increase to measure.
    const digits = await testImages(dir, 2)
    for (let round = 0; round < 2; round++) {
      const statuses = await classify(serve.url, 'digits', digits)
      assert.deepEqual(statuses, digits.map(() => 200))
      sent += digits.length
      ingest.observer.consumed?.('digits', 0, 50 * (round + 1))
      ingest.observer.lag?.('digits', 0, 120 - 60 * round)
      ingest.observer.rejected?.('corrupt')
      ingest.observer.committed?.({version: round + 1, shards: 1, total: 50 * (round + 1)})
      await scraped(sent)
      await nextScrape()
    }
  })

  after(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const exited = new Promise((resolve) => prometheus.once('exit', resolve))
      prometheus.kill('SIGTERM')
      await exited
    }
    await ingest?.close()
    await serve?.stop()
    await cleanup?.()
  })

  it('every dashboard query returns data', async () => {
    for (const q of await dashboardQueries()) {
      const r = await query(q.expr)
      assert.equal(r.status, 'success', `${q.title}: ${q.expr}\n${r.error}`)
      assert.ok(r.data.result.length > 0, `${q.title}: no data for ${q.expr}`)
      assert.ok(r.data.result.some((s) => Number.isFinite(Number(s.value[1]))), `${q.title}: only NaN for ${q.expr}`)
    }
  })

  it('every alert expression (without its threshold) returns data, and Prometheus evaluates the rules', async () => {
    for (const q of await alertQueries()) {
      const r = await query(q.expr)
      assert.equal(r.status, 'success', `${q.title}: ${q.expr}\n${r.error}`)
      assert.ok(r.data.result.length > 0, `${q.title}: no data for ${q.expr}`)
    }
    const loaded = await until('every rule evaluated once', 15_000, async () => {
      const body = (await (await fetch(`${api}/api/v1/rules`)).json()) as {data: {groups: Array<{rules: Array<{name: string; health: string; lastError?: string; lastEvaluation: string}>}>}}
      const all = body.data.groups.flatMap((g) => g.rules)
      return all.length === 10 && all.every((r) => !r.lastEvaluation.startsWith('0001')) ? all : undefined
    })
    for (const rule of loaded) assert.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError}`)
  })

  it("the monitor's histogram_quantile agrees with Prometheus's on the same buckets", async () => {
    const ours = await scrape(serve.url)
    await scraped(sent)
    const h = histogramOf(ours.expo!, 'ml_serve_request_duration_seconds', {protocol: 'raw'})
    assert.equal(h.count, sent)
    for (const q of [0.5, 0.9, 0.99]) {
      const r = await query(`histogram_quantile(${q}, sum by (le) (ml_serve_request_duration_seconds_bucket{job="ml-serve", protocol="raw"}))`)
      const theirs = Number(r.data.result[0]!.value[1])
      const mine = histogramQuantile(q, h.buckets)
      assert.ok(Math.abs(mine - theirs) < 1e-9, `q=${q}: monitor ${mine}, Prometheus ${theirs}`)
    }
  })
})
