// `ml monitor` and `ml evaluate --report` end to end: a real model trained on MNIST digits, served by a
// real `ml serve` child process, watched by the real CLI (--once --json, --check exit codes, --png).
import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import sharp from 'sharp'
import {runCli, runJson, startCli, type CliResult} from '../../support/cli.js'
import {tempDir} from '../../support/fixtures.js'
import {classify, startServe, testImages, trainModel, type ServeProcess, type TrainedModel} from '../../support/monitor-fixtures.js'

interface Snapshot {
  intervalSeconds: number
  targets: Array<{target: string; up: boolean; error?: string; models: Array<{model: string; version: string; ready: boolean; window: unknown; total: {requests: number; errors: number; predictions: Record<string, number>; latencyMs: {p50: number | null; p99: number | null}}}>}>
  run?: {runId: string; epochs: number; metrics: unknown[]}
}

interface SloReport {
  ok: boolean
  windowSeconds: number
  models: Array<{model: string; requests: number; p99Ms: number | null}>
  checks: Array<{objective: string; scope: string; status: string; value: number | null; detail: string}>
}

describe('ml monitor against a live ml serve', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let model: TrainedModel
  let serve: ServeProcess
  let digits: Array<{label: string; png: Buffer}>

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-monitor-cli-'))
    model = await trainModel(dir, {monitor: {slo: {window: '1s', driftMinSamples: 20}}})
    serve = await startServe(model.config)
    digits = await testImages(dir, 2)
  })
  after(async () => {
    await serve?.stop()
    await cleanup()
  })

  /** Runs `ml monitor ...args` while sending images (cycling through `images`) until it exits. */
  async function withTraffic(args: string[], images: Array<{png: Buffer}>): Promise<CliResult & {sent: number}> {
    const {child, done} = startCli(['monitor', ...args], {cwd: dir})
    let exited = false
    void done.then(() => (exited = true))
    let sent = 0
    // Bounded: the check ends after its window; traffic only needs to cover that window.
    for (let i = 0; !exited && i < 20_000; i++) {
      await classify(serve.url, 'digits', [images[i % images.length]!])
      sent++
    }
    const result = await done
    assert.ok(exited, 'the monitor did not exit')
    child.removeAllListeners()
    return {...result, sent}
  }

  it('--once --json: one snapshot with the model, its totals and its top-1 predictions', async () => {
    const statuses = await classify(serve.url, 'digits', digits)
    assert.deepEqual(statuses, digits.map(() => 200))
    const {code, json, stderr} = await runJson<Snapshot>(['monitor', '--url', serve.url, '--once', '--interval', '0', '--config', model.config], {cwd: dir})
    assert.equal(code, 0, stderr)
    assert.equal(json.intervalSeconds, 0)
    const target = json.targets[0]!
    assert.equal(target.up, true)
    const m = target.models.find((x) => x.model === 'digits' && x.version === '1')!
    assert.ok(m, JSON.stringify(target.models))
    assert.equal(m.ready, true)
    assert.equal(m.window, null, 'one scrape: no window')
    assert.equal(m.total.requests, digits.length)
    assert.equal(m.total.errors, 0)
    assert.ok(m.total.latencyMs.p50! > 0 && m.total.latencyMs.p99! >= m.total.latencyMs.p50!)
    const predicted = Object.values(m.total.predictions).reduce((a, b) => a + b, 0)
    assert.equal(predicted, digits.length, 'every answered image is counted under its top-1 class')
  })

  it('--once with a run and a dead target: the run is read, the target is down, exit 0', async () => {
    const closed = net.createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const deadPort = (closed.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const {code, json} = await runJson<Snapshot>(['monitor', '--url', `http://127.0.0.1:${deadPort}`, '--run', model.runId, '--once', '--interval', '0', '--config', model.config], {cwd: dir})
    assert.equal(code, 0)
    assert.equal(json.targets[0]!.up, false)
    assert.match(json.targets[0]!.error!, /ECONNREFUSED/)
    assert.equal(json.run!.runId, model.runId)
    assert.equal(json.run!.metrics.length, 2)
    const human = await runCli(['monitor', '--url', serve.url, '--once', '--interval', '200ms', '--config', model.config], {cwd: dir})
    assert.equal(human.code, 0, human.stderr)
    assert.match(human.stdout, /^ml monitor {2}1 target\(s\)/)
    assert.match(human.stdout, /● digits:1 /)
  })

  it('--check passes within the objectives (exit 0, JSON report)', async () => {
    const result = await withTraffic(['--url', serve.url, '--check', '--window', '1s', '--p99-ms', '10000', '--error-rate', '0.5', '--config', model.config, '--json'], digits)
    assert.equal(result.code, 0, `stdout: ${result.stdout}\nstderr: ${result.stderr}`)
    const report = JSON.parse(result.stdout) as SloReport
    assert.equal(report.ok, true)
    assert.ok(report.windowSeconds >= 1, `window ${report.windowSeconds}`)
    assert.ok(report.models[0]!.requests > 0, 'traffic during the window')
    assert.deepEqual(report.checks.map((c) => [c.objective, c.status]), [['up', 'ok'], ['p99Ms', 'ok'], ['errorRate', 'ok']])
  })

  it('--check fails an impossible p99 with exit 6 and names the objective', async () => {
    const json = await withTraffic(['--url', serve.url, '--check', '--p99-ms', '0.001', '--config', model.config, '--json'], digits)
    assert.equal(json.code, 6, `stdout: ${json.stdout}\nstderr: ${json.stderr}`)
    const error = (JSON.parse(json.stdout) as {error: {code: string; exitCode: number; details: SloReport}}).error
    assert.equal(error.code, 'SLO_VIOLATED')
    assert.equal(error.exitCode, 6)
    assert.equal(error.details.checks.find((c) => c.objective === 'p99Ms')!.status, 'violated')
    const human = await withTraffic(['--url', serve.url, '--check', '--p99-ms', '0.001', '--config', model.config], digits)
    assert.equal(human.code, 6, `stdout: ${human.stdout}\nstderr: ${human.stderr}`)
    assert.match(human.stdout, /SLO check FAILED over a 1\.\d s window/)
    assert.match(human.stderr, /FAIL p99Ms +digits: p99 [\d.]+ ms > 0\.00 ms over \d+ requests/)
  })

  it('--check flags prediction drift when only one class is sent', async () => {
    const ones = (await testImages(dir, 3, ['1']))
    const drifted = await withTraffic(['--url', serve.url, '--check', '--window', '2s', '--drift', '0.25', '--config', model.config, '--json'], ones)
    assert.equal(drifted.code, 6, `stdout: ${drifted.stdout}\nstderr: ${drifted.stderr}`)
    const report = (JSON.parse(drifted.stdout) as {error: {details: SloReport}}).error.details
    const check = report.checks.find((c) => c.objective === 'drift')!
    assert.equal(check.status, 'violated', check.detail)
    assert.ok(check.value! > 1, `PSI ${check.value}`)
    const balanced = await withTraffic(['--url', serve.url, '--check', '--window', '2s', '--drift', '1', '--config', model.config, '--json'], await testImages(dir, 5))
    assert.equal(balanced.code, 0, `stdout: ${balanced.stdout}\nstderr: ${balanced.stderr}`)
    const ok = JSON.parse(balanced.stdout) as SloReport
    assert.equal(ok.checks.find((c) => c.objective === 'drift')!.status, 'ok')
  })

  it('usage mistakes exit 2', async () => {
    const none = await runJson<{error: {code: string}}>(['monitor', '--check', '--config', model.config], {cwd: dir})
    assert.equal(none.code, 2)
    assert.equal(none.json.error.code, 'MONITOR_USAGE')
    const live = await runJson<{error: {code: string}}>(['monitor', '--url', serve.url, '--config', model.config], {cwd: dir})
    assert.equal(live.code, 2, 'the live dashboard is not JSON')
    const window = await runJson<{error: {message: string}}>(['monitor', '--url', serve.url, '--check', '--window', 'soon', '--p99-ms', '5', '--config', model.config], {cwd: dir})
    assert.equal(window.code, 2)
    assert.match(window.json.error.message, /--window: expected a duration/)
  })

  it('the live dashboard prints frames to a pipe and stops after --frames', async () => {
    const result = await runCli(['monitor', '--url', serve.url, '--run', model.runId, '--interval', '200ms', '--frames', '2', '--config', model.config], {cwd: dir})
    assert.equal(result.code, 0, result.stderr)
    const frames = result.stdout.split(/\n\n/).filter((f) => f.startsWith('ml monitor'))
    assert.equal(frames.length, 2)
    assert.match(frames[1]!, /● digits:1 /)
    assert.match(frames[1]!, new RegExp(`▌run ${model.runId} {2}completed {2}epoch 2/2`))
    assert.doesNotMatch(result.stdout, /\x1b\[/, 'no escape codes into a pipe')
  })

  it('--run --png writes the training curves', async () => {
    const file = path.join(dir, 'curves.png')
    const {code, json} = await runJson<{file: string; width: number; height: number; epochs: number}>(['monitor', '--run', model.runId, '--png', file, '--config', model.config], {cwd: dir})
    assert.equal(code, 0)
    assert.equal(json.epochs, 2)
    const meta = await sharp(file).metadata()
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 1000, 420])
  })

  it('ml evaluate --report writes an HTML page and PNG charts beside it', async () => {
    const out = path.join(dir, 'report')
    const {code, json, stderr} = await runJson<{accuracy: number; report: string; count: number}>(['evaluate', '--report', out, '--config', model.config], {cwd: dir})
    assert.equal(code, 0, stderr)
    assert.equal(json.report, path.join(out, 'index.html'))
    const html = await readFile(json.report, 'utf8')
    const images = [...html.matchAll(/<img src="([^"]+)" width="(\d+)" height="(\d+)"/g)].map((m) => ({file: m[1]!, width: Number(m[2]), height: Number(m[3])}))
    assert.deepEqual(images.map((i) => i.file), ['training-curves.png', 'confusion-matrix.png', 'per-class-accuracy.png', 'misclassified.png'])
    for (const image of images) {
      assert.ok(!image.file.includes('/'), 'referenced relatively, next to the page')
      const meta = await sharp(path.join(out, image.file)).metadata()
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', image.width, image.height], image.file)
    }
    assert.deepEqual([images[0]!.width, images[0]!.height], [1000, 420])
    const wrong = Math.round(json.count * (1 - json.accuracy))
    assert.match(html, new RegExp(`<th>misclassified</th><td>${wrong}</td>`))
    assert.match(html, new RegExp(`Misclassified|misclassified`))
  })
})
