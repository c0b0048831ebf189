// Figures from scrapes of the server's own ServeMetrics, SLO judgement, the dashboard laid out into
// fixed terminal sizes, and the collector against a local /metrics server.
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'
import {serveIngestMetrics} from '../../../src/lib/data/kafka-metrics.js'
import {Collector, seriesKey, type Frame} from '../../../src/lib/monitor/collector.js'
import {ingestStats} from '../../../src/lib/monitor/ingest-stats.js'
import {parseExposition} from '../../../src/lib/monitor/prom-text.js'
import {renderDashboard, type RenderOptions} from '../../../src/lib/monitor/render.js'
import type {RunSnapshot} from '../../../src/lib/monitor/run-follow.js'
import {metricsUrl, scrape} from '../../../src/lib/monitor/scrape.js'
import {serveStats} from '../../../src/lib/monitor/serve-stats.js'
import {evaluateSlo, formatSloReport} from '../../../src/lib/monitor/slo.js'
import {braillePlot, resample, sparkline, stripAnsi, truncate, visibleWidth} from '../../../src/lib/monitor/tui.js'
import type {ServeMetrics} from '../../../src/lib/serve/metrics.js'
import {request, scrapeOf, serveMetrics, startTextServer, type TextServer} from '../../support/monitor-fixtures.js'

const T = 'http://127.0.0.1:8080'
const near = (a: number | null | undefined, b: number, tol = 1e-9) => assert.ok(a !== null && a !== undefined && Math.abs(a - b) <= tol, `${a} is not ${b}`)

/** First scrape: 10 requests of 3 ms. Second, 2 s later: 10 of 4 ms, 10 of 30 ms and 2 answered 503 in 1 ms. */
async function twoScrapes(): Promise<{m: ServeMetrics; first: Awaited<ReturnType<typeof scrapeOf>>; second: Awaited<ReturnType<typeof scrapeOf>>}> {
  const m = serveMetrics((x) => {
    x.modelReady.set({model: 'digits', version: '1'}, 1)
    for (let i = 0; i < 10; i++) request(x, 'digits', '1', 200, 0.003)
    x.batch('digits', '1', 10, 0.002)
  })
  const first = await scrapeOf(T, m, 1_000_000)
  for (let i = 0; i < 10; i++) request(m, 'digits', '1', 200, 0.004)
  for (let i = 0; i < 10; i++) request(m, 'digits', '1', 200, 0.03)
  for (let i = 0; i < 2; i++) request(m, 'digits', '1', 503, 0.001)
  m.batch('digits', '1', 4, 0.002)
  m.batch('digits', '1', 16, 0.002)
  m.queueDepth.set({model: 'digits', version: '1'}, 7)
  // Requests that are not model requests must not count.
  m.requests.inc({model: '', version: '', protocol: 'health', status: '200'}, 50)
  m.requests.inc({model: '', version: '', protocol: 'metrics', status: '200'}, 5)
  const second = await scrapeOf(T, m, 1_002_000)
  return {m, first, second}
}

describe('serve figures from two scrapes', () => {
  it('rates, error ratio and window quantiles match hand-computed values', async () => {
    const {first, second} = await twoScrapes()
    const stats = serveStats(second, first)
    assert.equal(stats.up, true)
    assert.equal(stats.models.length, 1)
    const m = stats.models[0]!
    assert.equal(m.model, 'digits')
    assert.equal(m.version, '1')
    assert.equal(m.ready, true)
    assert.equal(m.queueDepth, 7)
    const w = m.window!
    assert.equal(w.seconds, 2)
    assert.equal(w.requests, 22)
    assert.equal(w.errors, 2)
    near(w.requestsPerSec, 11)
    near(w.errorRate, 2 / 22)
    // Window buckets: 0.001 -> 2, 0.005 -> 12, 0.05 -> 22. Rank 11 lies in (0.003, 0.005]: 3 + 2 * 9/10 ms.
    near(w.latencyMs.p50, 4.8, 1e-9)
    // Rank 21.78 in (0.025, 0.05]: 25 + 25 * 9.78/10 ms.
    near(w.latencyMs.p99, 49.45, 1e-9)
    assert.equal(w.avgBatchSize, 10, 'batches of 4 and 16 in the window')
    assert.equal(w.images, 20)
    // Since start: 0.001 -> 2, 0.003 -> 12, 0.005 -> 22, 0.05 -> 32. Rank 16 in (0.003, 0.005].
    near(m.total.latencyMs.p50, 3.8, 1e-9)
    assert.equal(m.total.requests, 32)
    assert.equal(m.total.avgBatchSize, 10)
  })

  it('event-loop lag is what exceeds the sampling interval the gauge includes', () => {
    const at = (p99: number) =>
      serveStats({target: T, url: `${T}/metrics`, at: 1, durationMs: 1, expo: parseExposition(`nodejs_eventloop_lag_p99_seconds ${p99}\n`)}).process?.eventLoopLagP99Ms
    // An idle loop sampled every 10 ms reads about 10.2 ms.
    near(at(0.0102), 0.2, 1e-9)
    near(at(0.0135), 3.5, 1e-9)
    assert.equal(at(0.009), 0, 'a sample that came early is no lag, not negative')
  })

  it('a first scrape has totals but no window; a failed scrape is down', async () => {
    const {first} = await twoScrapes()
    const stats = serveStats(first)
    assert.equal(stats.models[0]!.window, null)
    assert.equal(stats.models[0]!.total.requests, 10)
    const down = serveStats({target: T, url: `${T}/metrics`, at: 1, durationMs: 1, error: 'ECONNREFUSED'})
    assert.equal(down.up, false)
    assert.equal(down.error, 'ECONNREFUSED')
  })

  it('a counter reset (server restart) counts from zero rather than going negative', async () => {
    const {second} = await twoScrapes()
    const restarted = serveMetrics((x) => request(x, 'digits', '1', 200, 0.004))
    const stats = serveStats(await scrapeOf(T, restarted, 1_004_000), second)
    assert.equal(stats.models[0]!.window!.requests, 1)
  })
})

describe('SLO check', () => {
  it('passes and fails on p99 and error rate, with a readable report', async () => {
    const {first, second} = await twoScrapes()
    const pass = evaluateSlo({p99Ms: 50, errorRate: 0.1, driftMinSamples: 100}, [first], [second])
    assert.equal(pass.ok, true)
    assert.equal(pass.windowSeconds, 2)
    assert.deepEqual(pass.checks.map((c) => [c.objective, c.status]), [['up', 'ok'], ['p99Ms', 'ok'], ['errorRate', 'ok']])
    const fail = evaluateSlo({p99Ms: 40, errorRate: 0.05, driftMinSamples: 100}, [first], [second])
    assert.equal(fail.ok, false)
    assert.deepEqual(fail.checks.filter((c) => c.status === 'violated').map((c) => c.objective), ['p99Ms', 'errorRate'])
    const text = formatSloReport(fail).join('\n')
    assert.match(text, /SLO check FAILED over a 2\.0 s window: 2 of 3 checks violated/)
    assert.match(text, /FAIL p99Ms +digits: p99 49\.5 ms > 40\.0 ms over 22 requests/)
    assert.match(text, /FAIL errorRate digits: 2 of 22 requests failed \(5xx\): 9\.09% > 5\.00%/)
  })

  it('judges drift against the priors once there are enough predictions', async () => {
    const {first} = await twoScrapes()
    const predictions = (a: number, b: number) => `ml_serve_predictions_total{model="digits",version="1",class="a"} ${a}\nml_serve_predictions_total{model="digits",version="1",class="b"} ${b}\n`
    const before = {...first, expo: parseExposition(predictions(10, 10))}
    const balanced = {...first, at: first.at + 1000, expo: parseExposition(predictions(110, 110))}
    const skewed = {...first, at: first.at + 1000, expo: parseExposition(predictions(200, 20))}
    const priors = {a: 0.5, b: 0.5}
    const ok = evaluateSlo({drift: 0.1, driftMinSamples: 100}, [before], [balanced], priors)
    assert.equal(ok.ok, true)
    assert.equal(ok.checks.find((c) => c.objective === 'drift')!.value, 0)
    const bad = evaluateSlo({drift: 0.1, driftMinSamples: 100}, [before], [skewed], priors)
    assert.equal(bad.ok, false)
    const check = bad.checks.find((c) => c.objective === 'drift')!
    assert.equal(check.status, 'violated')
    assert.match(check.detail, /over 200 predictions .*largest shift: class [ab] 50\.00% in training, (95|5)\.00% predicted/)
    const few = evaluateSlo({drift: 0.1, driftMinSamples: 1000}, [before], [skewed], priors)
    assert.equal(few.checks.find((c) => c.objective === 'drift')!.status, 'no-data')
  })

  it('a target that cannot be scraped violates "up"; no traffic is no data, not a failure', async () => {
    const {first} = await twoScrapes()
    const down = {target: 'http://127.0.0.1:1', url: '', at: 2, durationMs: 1, error: 'ECONNREFUSED'}
    const report = evaluateSlo({p99Ms: 10, driftMinSamples: 100}, [first, down], [first, down])
    assert.equal(report.ok, false)
    assert.deepEqual(report.checks.map((c) => [c.objective, c.scope, c.status]), [
      ['up', T, 'ok'],
      ['up', 'http://127.0.0.1:1', 'violated'],
      ['p99Ms', 'digits', 'no-data'],
    ])
  })
})

function frameFrom(targets: Frame['targets'], extra: Partial<Frame> = {}): Frame {
  return {at: 1_002_000, targets, drift: new Map(), ...extra}
}

function options(columns: number, rows: number, history: RenderOptions['history'] = () => []): RenderOptions {
  return {columns, rows, colour: false, refreshMs: 2000, historySeconds: 300, slo: {p99Ms: 40}, history}
}

function assertFits(lines: string[], columns: number, rows: number): void {
  assert.ok(lines.length <= rows, `${lines.length} lines in ${rows} rows`)
  for (const line of lines) assert.ok(visibleWidth(line) <= columns, `line wider than ${columns}: ${JSON.stringify(line)}`)
}

const RUN: RunSnapshot = {
  runId: 'digits-20261124-101500',
  dir: '/runs/digits-20261124-101500',
  status: 'running',
  backend: 'wasm',
  epochs: 10,
  epochsCompleted: 4,
  createdAt: '',
  updatedAt: '',
  metrics: [1, 2, 3, 4].map((epoch) => ({epoch, loss: 1 / epoch, accuracy: 1 - 0.5 / epoch, valLoss: 1.1 / epoch, valAccuracy: 1 - 0.55 / epoch, imagesPerSec: 1200, seconds: 30, at: ''})),
  latest: null,
  imagesPerSec: 1234,
  etaSeconds: 180,
  best: {epoch: 4, valAccuracy: 0.8625},
}
RUN.latest = RUN.metrics.at(-1)!

describe('dashboard rendering', () => {
  it('lays a frame out in 100x30: every figure of the model row, the run and the ingest', async () => {
    const {first, second} = await twoScrapes()
    const stats = serveStats(second, first)
    const history = (key: string) => (key === seriesKey(T, 'digits', '1', 'rps') ? [{t: 1_002_000 - 280_000, v: 2}, {t: 1_002_000 - 140_000, v: 6}, {t: 1_002_000, v: 11}] : [])
    const ingest = ingestStats(
      {target: 'http://127.0.0.1:9464/metrics', url: '', at: 1_002_000, durationMs: 1, expo: parseExposition('ml_ingest_records_consumed_total{topic="t",partition="0"} 300\nml_ingest_kafka_lag{topic="t",partition="0"} 42\nml_ingest_rejects_total{reason="corrupt"} 3\n')},
      {target: 'http://127.0.0.1:9464/metrics', url: '', at: 1_000_000, durationMs: 1, expo: parseExposition('ml_ingest_records_consumed_total{topic="t",partition="0"} 100\n')},
    )
    const lines = renderDashboard(frameFrom([stats], {run: RUN, ingest}), options(100, 30, history))
    assertFits(lines, 100, 30)
    const text = lines.join('\n')
    assert.match(lines[0]!, /^ml monitor {2}1 target\(s\) {2}every 2s/)
    assert.match(text, /▌http:\/\/127\.0\.0\.1:8080 {2}UP/)
    const header = lines.find((l) => l.startsWith('model:version'))!
    for (const column of ['req/s', 'err', 'p50', 'p95', 'p99', 'batch', 'queue']) assert.ok(header.includes(column), `column ${column} in ${header}`)
    const row = lines.find((l) => l.includes('digits:1'))!
    assert.match(row, /● digits:1 +11 +9\.09% +4\.80ms +\S+ +49\.\dms +10 +7 /)
    assert.match(row, /▂ +▅ +█/, 'the req/s sparkline: three points over the 5 minutes, rising')
    assert.match(text, /▌run digits-20261124-101500 {2}running {2}epoch 4\/10 █████░░░░░░░ 40%/)
    assert.match(text, /loss +0\.2500/)
    assert.match(text, /accuracy +87\.50%/)
    assert.match(text, /[⠀-⣿]/u, 'a braille plot of the curves')
    assert.match(text, /▌ingest http:\/\/127\.0\.0\.1:9464\/metrics {2}UP {2}100 rec\/s/)
    assert.match(text, /lag 42/)
    assert.match(lines.at(-1)!, /sparklines: last 5m/)
  })

  it('drops the least important columns on a narrow terminal and still fits', async () => {
    const {first, second} = await twoScrapes()
    const lines = renderDashboard(frameFrom([serveStats(second, first)]), options(50, 20))
    assertFits(lines, 50, 20)
    const header = lines.find((l) => l.startsWith('model:version'))!
    assert.ok(header.includes('p99') && header.includes('req/s'), header)
    assert.ok(!header.includes('p95'), 'p95 goes before p99')
  })

  it('cuts what does not fit in the height, saying how much is hidden', async () => {
    const {first, second} = await twoScrapes()
    const stats = serveStats(second, first)
    const many = {...stats, models: Array.from({length: 12}, (_, i) => ({...stats.models[0]!, version: String(i + 1)}))}
    const down = serveStats({target: 'http://127.0.0.1:9', url: '', at: 1, durationMs: 1, error: 'ECONNREFUSED'})
    const lines = renderDashboard(frameFrom([many, down]), options(80, 12))
    assertFits(lines, 80, 12)
    assert.match(lines.join('\n'), /more model version\(s\)|more line\(s\)/)
    assert.match(lines.join('\n'), /▌http:\/\/127\.0\.0\.1:9 {2}DOWN {2}ECONNREFUSED/)
  })

  it('colours a figure over its objective red only when colour is on', async () => {
    const {first, second} = await twoScrapes()
    const frame = frameFrom([serveStats(second, first)])
    const coloured = renderDashboard(frame, {...options(120, 30), colour: true})
    assert.ok(coloured.some((l) => l.includes('\x1b[31m49.')), 'p99 49.5 ms over 40 ms in red')
    assert.deepEqual(coloured.map(stripAnsi), renderDashboard(frame, options(120, 30)))
  })
})

describe('terminal primitives', () => {
  it('sparklines, braille plots, resampling and truncation', () => {
    assert.equal(sparkline([0, 1, 2, 3, 4, 5, 6, 7]), '▁▂▃▄▅▆▇█')
    assert.equal(sparkline([null, 4, 4]), ' ██', 'the scale starts at 0: a steady rate is a full bar')
    assert.equal(sparkline([0, 0]), '▁▁')
    assert.equal(sparkline([]), '')
    const plot = braillePlot([{values: [0, 1, 2, 3]}], 4, 2)
    assert.equal(plot.length, 2)
    // A diagonal from the bottom-left dot to the top-right one, each step joined.
    assert.deepEqual(plot, ['  ⡠⠊', '⡠⠊  '])
    assert.deepEqual(resample([{t: 0, v: 1}, {t: 1, v: 3}, {t: 9, v: 5}], 0, 10, 2), [2, 5])
    assert.equal(truncate('abcdef', 4), 'abc…')
    assert.equal(visibleWidth(truncate('\x1b[31mabcdef\x1b[39m', 4)), 4)
    assert.equal(metricsUrl('http://h:1'), 'http://h:1/metrics')
    assert.equal(metricsUrl('h:1'), 'http://h:1/metrics')
    assert.equal(metricsUrl('http://h:1/custom'), 'http://h:1/custom')
  })
})

describe('collector against a /metrics server', () => {
  let server: TextServer
  before(async () => {
    server = await startTextServer()
  })
  after(() => server.close())

  it('scrapes, computes window figures between ticks and keeps sparkline history', async () => {
    const m = serveMetrics((x) => request(x, 'digits', '3', 200, 0.002))
    server.setText(await m.registry.metrics())
    const collector = new Collector({targets: [server.url, 'http://127.0.0.1:1'], historySeconds: 60, windowSeconds: 60, timeoutMs: 2000})
    const one = await collector.tick()
    assert.equal(one.targets[0]!.up, true)
    assert.equal(one.targets[0]!.models[0]!.window, null)
    assert.equal(one.targets[1]!.up, false)
    for (let i = 0; i < 4; i++) request(m, 'digits', '3', 200, 0.002)
    server.setText(await m.registry.metrics())
    const two = await collector.tick()
    assert.equal(two.targets[0]!.models[0]!.window!.requests, 4)
    assert.equal(collector.history(seriesKey(server.url, 'digits', '3', 'rps')).length, 2)
  })

  it("follows the Kafka ingest's own metrics endpoint: consumed/s, lag, rejects", async () => {
    const ingest = await serveIngestMetrics(0)
    try {
      const url = `http://127.0.0.1:${ingest.port}/metrics`
      const collector = new Collector({targets: [], ingest: url, historySeconds: 60, windowSeconds: 60, timeoutMs: 2000})
      ingest.observer.consumed?.('images', 0, 10)
      const one = await collector.tick()
      assert.equal(one.ingest!.up, true)
      assert.equal(one.ingest!.recordsPerSec, null, 'no rate from one scrape')
      ingest.observer.consumed?.('images', 0, 30)
      ingest.observer.consumed?.('images', 1, 20)
      ingest.observer.lag?.('images', 0, 7)
      ingest.observer.lag?.('images', 1, 5)
      ingest.observer.rejected?.('corrupt')
      ingest.observer.committed?.({version: 3, shards: 2, total: 1234})
      const two = await collector.tick()
      const stats = two.ingest!
      assert.ok(stats.recordsPerSec! > 0)
      assert.equal(stats.lag, 12)
      assert.deepEqual(stats.rejectsByReason, {corrupt: 1})
      assert.deepEqual(stats.totals, {consumed: 60, rejected: 1, commits: 1, datasetVersion: 3, datasetExamples: 1234})
      const text = renderDashboard(two, options(160, 20, (k) => collector.history(k))).join('\n')
      assert.match(text, /▌ingest http:\/\/127\.0\.0\.1:\d+\/metrics {2}UP {2}\S+ rec\/s .* {2}lag 12 .* {2}rejects \S+\/s \(1 total\)/)
      assert.match(text, /dataset v3 1234 examples/)
    } finally {
      await ingest.close()
    }
  })

  it('reports an HTTP error or a malformed exposition as a down target', async () => {
    server.setText('broken{ 1\n')
    const result = await scrape(server.url)
    assert.match(result.error!, /line 1/)
    const missing = await scrape(`${server.url}/nothing`)
    assert.match(missing.error!, /HTTP 404/)
  })
})
