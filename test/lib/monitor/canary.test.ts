import assert from 'node:assert/strict'
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import {after, before, describe, it} from 'node:test'
import {CANARY_DEFAULTS, evaluateCheck, formatCheckReport, judgeCanaries, splitsIn, type CheckReport} from '../../../src/lib/monitor/canary.js'
import {checkFailure} from '../../../src/lib/monitor/command.js'
import {parseExposition} from '../../../src/lib/monitor/prom-text.js'
import type {ServeMetrics} from '../../../src/lib/serve/metrics.js'
import {runJson} from '../../support/cli.js'
import {request, scrapeOf, serveMetrics} from '../../support/monitor-fixtures.js'

const T = 'http://127.0.0.1:8080'

interface Traffic {
  /** [status, seconds] of each request to the stable version 1, and to the canary version 2. */
  stable: Array<[number, number]>
  canary: Array<[number, number]>
}

const many = (n: number, status: number, seconds: number): Array<[number, number]> => Array.from({length: n}, () => [status, seconds])

/** A server's metrics with a 90/10 split of digits between versions 1 and 2, before and after `traffic`. */
async function window(traffic: Traffic, split = true) {
  const m = serveMetrics((x) => {
    if (split) {
      x.trafficSplit.set({model: 'digits', version: '1', role: 'stable'}, 90)
      x.trafficSplit.set({model: 'digits', version: '2', role: 'canary'}, 10)
    }
    // Earlier traffic, outside the window: it must not count.
    for (let i = 0; i < 500; i++) request(x, 'digits', '2', 503, 1)
  })
  const beforeText = await m.registry.metrics()
  const before = await scrapeOf(T, m, 1_000_000)
  const send = (x: ServeMetrics) => {
    for (const [status, seconds] of traffic.stable) request(x, 'digits', '1', status, seconds, 'kserve')
    for (const [status, seconds] of traffic.canary) request(x, 'digits', '2', status, seconds, 'kserve')
  }
  send(m)
  const after = await scrapeOf(T, m, 1_060_000)
  return {before, after, beforeText, afterText: await m.registry.metrics()}
}

describe('canary verdicts', () => {
  it('promote: the canary fails no more and is no slower than the stable version', async () => {
    const {before, after} = await window({stable: [...many(900, 200, 0.004), ...many(9, 500, 0.004)], canary: many(100, 200, 0.0045)})
    const report = evaluateCheck({driftMinSamples: 100}, CANARY_DEFAULTS, [before], [after])
    assert.equal(report.verdict, 'promote')
    assert.equal(report.ok, true)
    const [c] = report.canary
    assert.equal(c!.stable.requests, 909)
    assert.equal(c!.stable.errors, 9)
    assert.equal(c!.canary.requests, 100)
    assert.equal(c!.canary.errors, 0)
    assert.deepEqual([c!.stable.percent, c!.canary.percent], [90, 10])
    const text = formatCheckReport(report).join('\n')
    assert.match(text, /canary digits: version 2 \(10%\) vs stable 1 \(90%\): promote/)
    assert.match(text, /error rate 0\.00% \(0 of 100\) vs stable 0\.99% \(9 of 909\): <= 1\.99% allowed/)
  })

  it('rollback on a higher error rate, and on a slower p99', async () => {
    const failing = await window({stable: many(900, 200, 0.004), canary: [...many(95, 200, 0.004), ...many(5, 503, 0.004)]})
    const errors = evaluateCheck({driftMinSamples: 100}, CANARY_DEFAULTS, [failing.before], [failing.after])
    assert.equal(errors.verdict, 'rollback')
    assert.equal(errors.ok, false)
    assert.match(errors.canary[0]!.reasons[0]!, /error rate 5\.00% \(5 of 100\) vs stable 0\.00% \(0 of 900\): > 1\.00% allowed/)
    const failure = checkFailure(errors)
    assert.equal(failure.code, 'CANARY_ROLLBACK')
    assert.equal(failure.exitCode, 6)
    assert.match(failure.message, /canary digits: version 2 \(10%\) vs stable 1 \(90%\): rollback/)

    const slow = await window({stable: many(900, 200, 0.004), canary: many(100, 200, 0.04)})
    const latency = evaluateCheck({driftMinSamples: 100}, CANARY_DEFAULTS, [slow.before], [slow.after])
    assert.equal(latency.verdict, 'rollback')
    assert.match(latency.canary[0]!.reasons[1]!, /p99 49\.\d ms vs stable 4\.9\d ms: > 9\.9\d ms allowed/)
    // A p99 a little higher, within the margin, is no reason to roll back.
    const close = await window({stable: many(900, 200, 0.004), canary: many(100, 200, 0.0049)})
    assert.equal(evaluateCheck({driftMinSamples: 100}, CANARY_DEFAULTS, [close.before], [close.after]).verdict, 'promote')
  })

  it('wait: not enough requests on the canary (exit 7), unless a canary must roll back or an objective fails', async () => {
    const {before, after} = await window({stable: many(900, 200, 0.004), canary: many(99, 200, 0.004)})
    const report = evaluateCheck({driftMinSamples: 100}, CANARY_DEFAULTS, [before], [after])
    assert.equal(report.verdict, 'wait')
    assert.equal(report.ok, false)
    assert.deepEqual(report.canary[0]!.reasons, ['not enough requests: version 2 (canary) had 99 in the window, 100 are needed'])
    const failure = checkFailure(report)
    assert.equal(failure.code, 'CANARY_WAIT')
    assert.equal(failure.exitCode, 7)
    assert.match(failure.message, /^canary digits: version 2 \(10%\) vs stable 1 \(90%\): wait: not enough requests$/m)
    // The same window judged with a lower bar.
    assert.equal(evaluateCheck({driftMinSamples: 100}, {...CANARY_DEFAULTS, minRequests: 50}, [before], [after]).verdict, 'promote')
    // A violated objective outranks waiting.
    const slo = evaluateCheck({p99Ms: 1, driftMinSamples: 100}, CANARY_DEFAULTS, [before], [after])
    assert.equal(checkFailure(slo).code, 'SLO_VIOLATED')
  })

  it('a split down to one version, or none, is no canary', async () => {
    const {after, afterText} = await window({stable: many(10, 200, 0.004), canary: []}, false)
    assert.equal(splitsIn(after.expo!).size, 0)
    const one = parseExposition(`${afterText}ml_serve_traffic_split_percent{model="digits",version="3",role="stable"} 100\n`)
    assert.equal(splitsIn(one).size, 0)
    assert.deepEqual(judgeCanaries(CANARY_DEFAULTS, [[one, one]]), [])
    const report = evaluateCheck({driftMinSamples: 100}, CANARY_DEFAULTS, [after], [after])
    assert.equal(report.verdict, undefined)
    assert.deepEqual(report.canary, [])
  })
})

describe('ml monitor --check on a canary', () => {
  let server: http.Server
  let url: string
  let scrapes: string[] = []

  before(async () => {
    // Answers each scrape with the next text: the two scrapes of a check see a window of traffic.
    server = http.createServer((req, res) => {
      const text = scrapes.shift() ?? ''
      res.writeHead(req.url === '/metrics' ? 200 : 404, {'content-type': 'text/plain; version=0.0.4'}).end(text)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })

  const check = async (traffic: Traffic, extra: string[] = []) => {
    const {beforeText, afterText} = await window(traffic)
    scrapes = [beforeText, afterText]
    return runJson<CheckReport & {error?: {code: string; message: string; exitCode: number; details: CheckReport}}>(['monitor', '--url', url, '--check', '--window', '0.1s', '--json', ...extra])
  }

  it('exits 0 to promote, 6 to roll back, 7 to wait, with the report as one JSON object', async () => {
    const promote = await check({stable: many(900, 200, 0.004), canary: many(100, 200, 0.004)})
    assert.equal(promote.code, 0, promote.stderr)
    assert.equal(promote.json.verdict, 'promote')
    const rollback = await check({stable: many(900, 200, 0.004), canary: many(100, 500, 0.004)})
    assert.equal(rollback.code, 6, rollback.stderr)
    assert.equal(rollback.json.error!.code, 'CANARY_ROLLBACK')
    assert.equal(rollback.json.error!.details.canary[0]!.canary.errors, 100)
    const wait = await check({stable: many(900, 200, 0.004), canary: many(20, 200, 0.004)})
    assert.equal(wait.code, 7, wait.stderr)
    assert.equal(wait.json.error!.code, 'CANARY_WAIT')
    assert.match(wait.json.error!.message, /wait: not enough requests/)
    const lower = await check({stable: many(900, 200, 0.004), canary: many(20, 200, 0.004)}, ['--min-requests', '20'])
    assert.equal(lower.code, 0, lower.stderr)
  })

  it('with no objectives and no split on the targets, says there is nothing to check', async () => {
    scrapes = ['ml_serve_requests_total{model="digits",version="1",protocol="kserve",status="200"} 1\n']
    const none = await runJson<{error: {code: string; message: string}}>(['monitor', '--url', url, '--check', '--window', '0.1s', '--json'])
    assert.equal(none.code, 2)
    assert.equal(none.json.error.code, 'MONITOR_USAGE')
    assert.match(none.json.error.message, /no objectives, and no canary split/)
  })
})
