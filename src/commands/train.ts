import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'
import {createProgress, fmt} from '../lib/ui/progress.js'

export default class Train extends MlCommand {
  static override summary = 'Train the configured model on the dataset.'
  static override description = `Trains model (a preset or a layer list) on the train split of the dataset written by \`ml ingest\`, validating on the validation split after every epoch. Writes a run directory (train.runs/<run id>) with the model, labels, preprocessing spec, a JSONL metrics log and a checkpoint per epoch. Ctrl-C saves a checkpoint; --resume continues exactly where the run stopped.

Backends (train.backend): auto picks tfjs-node-gpu, then tfjs-node when installed, else wasm, else cpu, and says which.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> train',
    '<%= config.bin %> train --epochs 3 --backend wasm --json',
    '<%= config.bin %> train --resume',
    '<%= config.bin %> train --devices 2',
    '<%= config.bin %> train --resume mnist-20261124-101500',
  ]

  static override flags = {
    epochs: Flags.integer({summary: 'Epochs (overrides train.epochs).', env: 'ML_EPOCHS', min: 1}),
    'batch-size': Flags.integer({summary: 'Batch size (overrides train.batchSize).', env: 'ML_BATCH_SIZE', min: 1}),
    'learning-rate': Flags.string({summary: 'Learning rate (overrides train.learningRate).', env: 'ML_LEARNING_RATE'}),
    backend: Flags.string({summary: 'auto | tensorflow | wasm | cpu (overrides train.backend).', env: 'ML_BACKEND'}),
    seed: Flags.integer({summary: 'Seed (overrides train.seed).', env: 'ML_SEED', min: 0}),
    devices: Flags.string({
      summary: 'Data-parallel workers: a number, or auto (one per GPU, else one per core). Overrides train.devices.',
      env: 'ML_DEVICES',
    }),
    resume: Flags.string({
      summary: 'Continue a run from its last checkpoint: the latest run, or the given run id.',
      env: 'ML_RESUME',
      // Allows bare `--resume` (latest run) as well as `--resume <run id>`.
      parse: async (input) => input,
    }),
    'run-id': Flags.string({summary: 'Name of the new run (default: <name>-<timestamp>).', env: 'ML_RUN_ID'}),
  }

  async run() {
    // A bare `--resume` (no run id after it) means the latest run.
    const argv = this.argv.map((a, i, all) => (a === '--resume' && (i + 1 >= all.length || all[i + 1]!.startsWith('-')) ? '--resume=latest' : a))
    const {flags} = await this.parse(Train, argv)
    const loaded = await this.loadConfig(flags.config, {
      'train.epochs': flags.epochs,
      'train.batchSize': flags['batch-size'],
      'train.learningRate': flags['learning-rate'] === undefined ? undefined : Number(flags['learning-rate']),
      'train.backend': flags.backend,
      'train.seed': flags.seed,
      'train.devices': flags.devices === undefined || flags.devices === 'auto' ? flags.devices : Number(flags.devices),
    })
    const {runTraining} = await import('../lib/train/trainer.js')
    const abort = new AbortController()
    const onSignal = () => abort.abort()
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    let progress = createProgress({label: 'epoch', unit: 'step', enabled: false})
    let epochs = 0
    try {
      return await runTraining({
        loaded,
        resume: flags.resume === undefined ? undefined : flags.resume === 'latest' || flags.resume === '' ? true : flags.resume,
        runId: flags['run-id'],
        signal: abort.signal,
        onEvent: (event) => {
          switch (event.type) {
            case 'start': {
              epochs = event.epochs
              this.note(`run ${event.runId} (${event.resumed ? `resumed at epoch ${event.startEpoch + 1}` : 'new'}) on backend ${event.backend}${event.workers > 1 ? ` with ${event.workers} workers` : ''}`)
              for (const n of event.notes) this.note(`  ${n}`)
              this.note(`  ${event.params.toLocaleString('en-US')} parameters, ${event.trainCount} train / ${event.validationCount} validation images, ${event.steps} steps per epoch`)
              break
            }
            case 'step': {
              if (event.step === 0 || !progress) {
                progress.stop()
                progress = createProgress({label: `epoch ${event.epoch + 1}/${epochs}`, unit: 'step', total: event.steps, enabled: !this.jsonEnabled()})
              }
              progress.update(event.step + 1, `loss ${fmt(event.loss)} acc ${fmt(event.accuracy)} ${event.imagesPerSec.toFixed(0)} img/s`)
              break
            }
            case 'epoch': {
              progress.stop()
              const m = event.metrics
              this.note(
                `epoch ${m.epoch}/${event.epochs}  loss ${fmt(m.loss)}  acc ${fmt(m.accuracy)}  val_loss ${fmt(m.valLoss)}  val_acc ${fmt(m.valAccuracy)}  ${m.imagesPerSec.toFixed(0)} img/s  ${m.seconds.toFixed(1)}s`,
              )
              break
            }
            case 'early-stop': {
              this.note(`early stop after epoch ${event.epoch}: no improvement for ${event.patience} epochs`)
              break
            }
          }
        },
      }).then((summary) => {
        this.say(`run ${summary.runId}: ${summary.epochs} epochs, val_acc ${fmt(summary.valAccuracy)}, model in ${summary.runDir}`)
        return summary
      })
    } finally {
      progress.stop()
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
  }
}
