// `ml monitor`: live dashboard, one snapshot or an SLO check of ml serve targets, a training run and a
// Kafka ingest; everything but flag parsing lives in src/lib/monitor.
import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'

export default class Monitor extends MlCommand {
  static override summary = 'Watch ml serve targets, a training run and a Kafka ingest; check SLOs.'
  static override description = `A live terminal dashboard of one or more \`ml serve\` targets (--url, repeatable, or monitor.targets): per model version requests/s, 5xx error rate, p50/p95/p99 latency (from the histogram buckets, as PromQL histogram_quantile), average batch size, queue depth, with CPU and memory per target and sparklines over monitor.history. --run follows a training run (loss and accuracy curves, images/s, epoch progress); --ingest follows a Kafka ingest's metrics endpoint (rate, lag, rejects). q or Ctrl-C quits.

--once prints one snapshot (two scrapes --interval-ms apart; --json for scripts). --check scrapes twice --window apart and judges monitor.slo (p99Ms, errorRate, drift): exit 6 with a report when an objective is violated. On a server splitting traffic (serve.models[].split), --check also compares the canary version's 5xx rate and p99 latency with the stable version's (monitor.canary): promote (exit 0), rollback (exit 6) or wait: not enough requests (exit 7). --run <run> --png <file> writes the training curves as a PNG.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> monitor --url http://127.0.0.1:8080',
    '<%= config.bin %> monitor --run mnist-20261124-101500',
    '<%= config.bin %> monitor --url http://127.0.0.1:8080 --once --json',
    '<%= config.bin %> monitor --check --window 60s',
    '<%= config.bin %> monitor --url http://127.0.0.1:8080 --check --window 5m --json',
    '<%= config.bin %> monitor --run runs/latest-run --png curves.png',
  ]

  static override flags = {
    url: Flags.string({summary: 'An ml serve URL to watch (repeatable; overrides monitor.targets).', multiple: true, env: 'ML_MONITOR_URL'}),
    run: Flags.string({summary: 'Follow a training run: run id, run directory or gs:// run directory.'}),
    ingest: Flags.string({summary: 'Metrics URL of a Kafka ingest in follow mode (overrides monitor.ingest).'}),
    once: Flags.boolean({summary: 'Print one snapshot and exit.', exclusive: ['check']}),
    check: Flags.boolean({summary: 'Judge the SLOs in monitor.slo over --window; exit 6 when one is violated.'}),
    window: Flags.string({summary: 'SLO window for --check, e.g. 60s (overrides monitor.slo.window).'}),
    'interval-ms': Flags.integer({
      summary: 'Refresh interval in milliseconds, and the gap between the two scrapes of --once (overrides monitor.refreshMs); 0 with --once: one scrape.',
      min: 0,
      exclusive: ['interval'],
    }),
    interval: Flags.string({summary: 'The refresh interval as a duration (500ms, 2s); a bare number is milliseconds, as in --interval-ms.', hidden: true}),
    'p99-ms': Flags.string({summary: 'p99 latency objective in ms (overrides monitor.slo.p99Ms).'}),
    'error-rate': Flags.string({summary: 'Error-rate objective, e.g. 0.01 (overrides monitor.slo.errorRate).'}),
    drift: Flags.string({summary: 'Drift objective: highest PSI of predicted classes (overrides monitor.slo.drift).'}),
    'min-requests': Flags.integer({summary: 'Requests the canary and stable versions each need before --check judges a canary (overrides monitor.canary.minRequests).', min: 1}),
    dataset: Flags.string({summary: 'Dataset store whose manifest gives the training class priors for drift (default data.store).'}),
    png: Flags.string({summary: 'With --run: write the training curves to this PNG file and exit.'}),
    frames: Flags.integer({summary: 'Stop the dashboard after this many frames.', min: 1, hidden: true}),
  }

  async run() {
    const {flags} = await this.parse(Monitor)
    const {resolveMonitor, writeRunPng} = await import('../lib/monitor/command.js')
    const settings = await resolveMonitor(flags, (file, overrides) => this.loadConfig(file, overrides))
    if (flags.png) {
      const written = await writeRunPng(settings, flags.png)
      this.say(`wrote ${written.file} (${written.width}x${written.height}, ${written.epochs} epochs of ${written.runId})`)
      return written
    }
    if (flags.check) {
      const {runCheck} = await import('../lib/monitor/once.js')
      const {formatCheckReport} = await import('../lib/monitor/canary.js')
      const {checkFailure} = await import('../lib/monitor/command.js')
      this.note(`measuring over ${settings.windowSeconds} s...`)
      const report = await runCheck({targets: settings.targets, windowSeconds: settings.windowSeconds, settings: settings.slo, canary: settings.canary, priors: settings.priors, token: settings.token})
      for (const line of formatCheckReport(report)) this.say(line)
      if (!report.ok) throw checkFailure(report)
      return report
    }
    if (flags.once) {
      const {takeSnapshot} = await import('../lib/monitor/once.js')
      const snapshot = await takeSnapshot({...settings.collector, intervalMs: settings.intervalMs})
      if (!this.jsonEnabled()) {
        const {renderSnapshot} = await import('../lib/monitor/command.js')
        for (const line of renderSnapshot(snapshot, settings)) this.log(line)
      }
      return snapshot
    }
    if (this.jsonEnabled()) {
      const {UserError} = await import('../lib/errors.js')
      throw new UserError('--json needs --once or --check (the live dashboard is not JSON)', {code: 'MONITOR_JSON', exit: 'usage'})
    }
    const {runLive} = await import('../lib/monitor/live.js')
    await runLive({
      ...settings.collector,
      refreshMs: settings.intervalMs,
      slo: settings.slo,
      colour: !process.env.NO_COLOR,
      output: process.stdout,
      input: process.stdin,
      frames: flags.frames,
    })
    return undefined
  }
}
