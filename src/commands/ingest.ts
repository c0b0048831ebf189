import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'
import {UserError} from '../lib/errors.js'
import {createProgress} from '../lib/ui/progress.js'

export default class Ingest extends MlCommand {
  static override summary = 'Read images from the configured sources into a versioned dataset.'
  static override description = `Every image is decoded and checked with sharp, then resized and converted to data.image and written to TFRecord shards (tf.train.Example) with a manifest. Corrupt, truncated, empty, non-image and oversized files are quarantined with the reason (quarantine.jsonl in the store) and the run goes on. Exact duplicates are dropped. The train/validation/test split is decided by content hash, so it stays stable when images are added; re-running adds nothing twice. An interrupted ingest (Ctrl-C) leaves the previous dataset version intact.

Kafka sources (type: kafka) are read up to the end offsets seen at start, committing every data.shardSize records; each commit writes the manifest first and then the consumer group's offsets, so nothing is stored twice or lost across crashes. With --follow the ingest keeps consuming, also committing every --roll-interval ms, until SIGINT/SIGTERM, which finish the current shard, commit and exit 0. \`ml ingest publish\` seeds a topic from class folders.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> ingest',
    '<%= config.bin %> ingest --config configs/quickstart.yaml --json',
    'ML_CONFIG=ml.yaml <%= config.bin %> ingest --store /data/ds',
    '<%= config.bin %> ingest --follow --roll-interval 5000 --metrics-port 9464',
  ]

  static override flags = {
    store: Flags.string({summary: 'Dataset store directory (overrides data.store).', env: 'ML_DATA_STORE'}),
    concurrency: Flags.integer({summary: 'Parallel decodes (overrides data.concurrency).', env: 'ML_INGEST_CONCURRENCY', min: 1}),
    follow: Flags.boolean({summary: 'Keep consuming Kafka sources until SIGINT/SIGTERM, committing as it goes.', env: 'ML_INGEST_FOLLOW'}),
    'roll-interval': Flags.integer({
      summary: 'With --follow: commit at least this often, in ms (overrides the sources\' rollIntervalMs; default 10000).',
      env: 'ML_INGEST_ROLL_INTERVAL',
      min: 1,
    }),
    'metrics-port': Flags.integer({
      summary: 'Serve Prometheus metrics on this port at /metrics (0 = any free port; default: off).',
      env: 'ML_INGEST_METRICS_PORT',
      min: 0,
      max: 65_535,
    }),
    'metrics-host': Flags.string({summary: 'Address the metrics server listens on.', env: 'ML_INGEST_METRICS_HOST', default: '127.0.0.1'}),
  }

  async run() {
    const {flags} = await this.parse(Ingest)
    const loaded = await this.loadConfig(flags.config, {'data.store': flags.store, 'data.concurrency': flags.concurrency})
    const {runIngest} = await import('../lib/data/ingest.js')
    const {setUpIngest} = await import('../lib/data/ingest/follow.js')
    const progress = createProgress({label: 'ingest', unit: 'img', enabled: !this.jsonEnabled()})
    const setup = await setUpIngest({
      config: loaded.config,
      follow: flags.follow,
      ...(flags['metrics-port'] === undefined ? {} : {metricsPort: flags['metrics-port']}),
      metricsHost: flags['metrics-host'],
      log: (line) => progress.log(line),
    })
    if (setup.metricsUrl) this.note(`metrics on ${setup.metricsUrl}`)
    const {singleClassWarning} = await import('../lib/config/classes.js')
    const oneClass = await singleClassWarning(loaded)
    if (oneClass) this.stderrLine(`warning: ${oneClass}`)
    const interrupt = this.abortOnSignals()
    try {
      const summary = await runIngest({
        config: loaded.config,
        baseDir: loaded.baseDir,
        signal: interrupt.signal,
        follow: flags.follow,
        ...(flags['roll-interval'] === undefined ? {} : {rollIntervalMs: flags['roll-interval']}),
        observer: setup.observer,
        onProgress: (p) => progress.update(p.seen, `accepted ${p.accepted} rejected ${p.rejected} dup ${p.duplicates}`, p.total),
      })
      progress.stop()
      this.say(
        `dataset v${summary.datasetVersion} in ${summary.store}: ${summary.total} images, ${summary.classes} classes` +
          ` (train ${count(summary.counts.train)}, validation ${count(summary.counts.validation)}, test ${count(summary.counts.test)})`,
      )
      this.say(`this run: accepted ${summary.accepted}, duplicates ${summary.duplicates}, rejected ${summary.rejected}, ${summary.shards} new shard(s), ${summary.imagesPerSec.toFixed(0)} images/s`)
      for (const [reason, n] of Object.entries(summary.rejectedByReason)) this.say(`  rejected (${reason}): ${n} — see ${summary.store}/quarantine.jsonl`)
      return summary
    } catch (error) {
      progress.stop()
      if (interrupt.signal.aborted && !(error instanceof UserError)) {
        throw new UserError('ingest interrupted; the previous dataset version is intact', {code: 'INTERRUPTED', exit: 'interrupted', cause: error})
      }
      throw error
    } finally {
      interrupt.release()
      await setup.close()
    }
  }
}

function count(classCounts: Record<string, number>): number {
  return Object.values(classCounts).reduce((a, b) => a + b, 0)
}
