import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'
import {UserError} from '../lib/ui/errors.js'
import {createProgress} from '../lib/ui/progress.js'

export default class Ingest extends MlCommand {
  static override summary = 'Read images from the configured sources into a versioned dataset.'
  static override description = `Every image is decoded and checked with sharp, then resized and converted to data.image and written to TFRecord shards (tf.train.Example) with a manifest. Corrupt, truncated, empty, non-image and oversized files are quarantined with the reason (quarantine.jsonl in the store) and the run goes on. Exact duplicates are dropped. The train/validation/test split is decided by content hash, so it stays stable when images are added; re-running adds nothing twice. An interrupted ingest (Ctrl-C) leaves the previous dataset version intact.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> ingest',
    '<%= config.bin %> ingest --config configs/quickstart.yaml --json',
    'ML_CONFIG=ml.yaml <%= config.bin %> ingest --store /data/ds',
  ]

  static override flags = {
    store: Flags.string({summary: 'Dataset store directory (overrides data.store).', env: 'ML_DATA_STORE'}),
    concurrency: Flags.integer({summary: 'Parallel decodes (overrides data.concurrency).', env: 'ML_INGEST_CONCURRENCY', min: 1}),
  }

  async run() {
    const {flags} = await this.parse(Ingest)
    const loaded = await this.loadConfig(flags.config, {'data.store': flags.store, 'data.concurrency': flags.concurrency})
    const {runIngest} = await import('../lib/data/ingest.js')
    const progress = createProgress({label: 'ingest', unit: 'img', enabled: !this.jsonEnabled()})
    const abort = new AbortController()
    const onSignal = () => abort.abort()
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    try {
      const summary = await runIngest({
        config: loaded.config,
        baseDir: loaded.baseDir,
        signal: abort.signal,
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
      if (abort.signal.aborted && !(error instanceof UserError)) {
        throw new UserError('ingest interrupted; the previous dataset version is intact', {code: 'INTERRUPTED', exit: 'interrupted', cause: error})
      }
      throw error
    } finally {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
  }
}

function count(classCounts: Record<string, number>): number {
  return Object.values(classCounts).reduce((a, b) => a + b, 0)
}
