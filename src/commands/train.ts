import {Flags} from '@oclif/core'
import type {LoadedConfig} from '../lib/config/load.js'
import {MlCommand} from '../lib/ui/command.js'
import {UserError} from '../lib/errors.js'
import {fmt} from '../lib/ui/progress.js'
import {stopOnSignals} from '../lib/train/stop.js'

export default class Train extends MlCommand {
  static override summary = 'Train the configured model on the dataset.'
  static override description = `Trains model (a preset or a layer list) on the train split of the dataset written by \`ml ingest\`, validating on the validation split after every epoch. Writes a run directory (train.runs/<run id>) with the model, labels, preprocessing spec, a JSONL metrics log and a checkpoint per epoch. Ctrl-C saves a checkpoint; --resume continues exactly where the run stopped.

Backends (train.backend): auto picks tfjs-node-gpu, then tfjs-node when installed, else wasm, else cpu, and says which.

Vertex AI (--target vertex, train.vertex): the resolved config is uploaded to <train.vertex.baseOutputDir>/<job>/config.yaml and a CustomJob runs \`ml train\` on it in the ml container image, with one data-parallel worker per GPU; the run is written under the same prefix. A spinner follows the job's state; --detach prints the job name and returns (see \`ml train status\` and \`ml train cancel\`). Ctrl-C asks whether to cancel the job (on a terminal; otherwise it cancels). data.store must be on gs://.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> train',
    '<%= config.bin %> train --epochs 3 --backend wasm --json',
    '<%= config.bin %> train --resume',
    '<%= config.bin %> train --summary',
    '<%= config.bin %> train --devices 2',
    '<%= config.bin %> train --resume mnist-20261124-101500',
    '<%= config.bin %> train --target vertex',
    '<%= config.bin %> train --target vertex --detach --json',
  ]

  static override flags = {
    epochs: Flags.integer({summary: 'Epochs (overrides train.epochs).', env: 'ML_EPOCHS', min: 1}),
    'batch-size': Flags.integer({summary: 'Batch size (overrides train.batchSize).', env: 'ML_BATCH_SIZE', min: 1}),
    'learning-rate': Flags.string({summary: 'Learning rate (overrides train.learningRate).', env: 'ML_LEARNING_RATE'}),
    backend: Flags.string({summary: 'Backend (overrides train.backend).', options: ['auto', 'tensorflow', 'wasm', 'cpu'], env: 'ML_BACKEND'}),
    seed: Flags.integer({summary: 'Seed (overrides train.seed).', env: 'ML_SEED', min: 0}),
    devices: Flags.string({
      summary: 'Data-parallel workers: a number, or auto (one per GPU, else one per core). Overrides train.devices.',
      env: 'ML_DEVICES',
    }),
    resume: Flags.string({
      summary: 'Continue a run from its last checkpoint: bare --resume takes the latest run; --resume <run id> a given one.',
      helpValue: '[<run id>]',
      env: 'ML_RESUME',
      // Allows bare `--resume` (latest run) as well as `--resume <run id>`.
      parse: async (input) => input,
    }),
    'run-id': Flags.string({summary: 'Name of the new run (default: <name>-<timestamp>).', env: 'ML_RUN_ID'}),
    target: Flags.string({summary: 'Where to train (overrides train.target).', options: ['local', 'vertex', 'sagemaker'], env: 'ML_TRAIN_TARGET'}),
    detach: Flags.boolean({summary: 'With --target vertex or sagemaker: print the job name and return instead of following the job.'}),
    summary: Flags.boolean({summary: 'Print the model (layers, output shapes, parameters, Keras style) and exit without training.'}),
    quiet: Flags.boolean({char: 'q', summary: 'No progress on stderr (by default the epoch lines are printed there, with --json too).'}),
  }

  async run() {
    const {trialOverrides, hypertuneReporter} = await import('../lib/train/tune.js')
    const {publishModelDir, vertexRunsDir} = await import('../lib/train/vertex.js')
    // A tuning trial gets its values as --<parameter id>=<value> arguments (see ml tune).
    const trial = trialOverrides(this.argv)
    // A bare `--resume` (no run id after it) means the latest run.
    const argv = trial.argv.map((a, i, all) => (a === '--resume' && (i + 1 >= all.length || all[i + 1]!.startsWith('-')) ? '--resume=latest' : a))
    const {flags} = await this.parse(Train, argv)
    // Inside a SageMaker training job: the config, dataset channel and model folder come from SageMaker.
    const {sageMakerJobEnv} = await import('../lib/train/sagemaker.js')
    const sagemaker = await sageMakerJobEnv()
    if (sagemaker) return this.trainInSageMaker(sagemaker, argv)
    const loaded = await this.loadConfig(flags.config, {
      'train.epochs': flags.epochs,
      'train.batchSize': flags['batch-size'],
      'train.learningRate': flags['learning-rate'] === undefined ? undefined : Number(flags['learning-rate']),
      'train.backend': flags.backend,
      'train.seed': flags.seed,
      'train.devices': flags.devices === undefined || flags.devices === 'auto' ? flags.devices : Number(flags.devices),
      'train.target': flags.target,
      // Inside a Vertex AI job: runs go under the job's output prefix (per trial when tuning).
      'train.runs': vertexRunsDir(),
      ...trial.overrides,
    })
    if (flags.summary) {
      const {summarizeTrainingModel} = await import('../lib/model/summary.js')
      await (await import('../lib/engine/backend.js')).initEngine(loaded.config.train.backend)
      const {text, ...summary} = await summarizeTrainingModel(loaded)
      this.say(text)
      return summary
    }
    if (loaded.config.train.target === 'vertex') return this.trainOnVertex(loaded, flags.detach)
    if (loaded.config.train.target === 'sagemaker') return this.trainOnSageMaker(loaded, flags.detach)
    if (flags.detach) throw new UserError('--detach only applies to --target vertex or sagemaker', {code: 'USAGE', exit: 'usage'})
    const reportMetric = hypertuneReporter(process.env, loaded.config.tune?.metric)
    const {runTraining} = await import('../lib/train/trainer.js')
    const interrupt = stopOnSignals({notice: (m) => this.stderrLine(m)})
    const {trainProgress} = await import('../lib/ui/train-progress.js')
    const progress = trainProgress({line: (m) => this.stderrLine(m), bar: !this.jsonEnabled(), quiet: flags.quiet, onEpoch: reportMetric})
    try {
      return await runTraining({
        loaded,
        resume: flags.resume === undefined ? undefined : flags.resume === 'latest' || flags.resume === '' ? true : flags.resume,
        runId: flags['run-id'],
        signal: interrupt.signal,
        onEvent: progress.onEvent,
      }).then(async (summary) => {
        this.say(`run ${summary.runId}: ${summary.epochs} epochs, val_acc ${fmt(summary.valAccuracy)}, model in ${summary.runDir}`)
        // Inside a Vertex AI job: the model also goes where Vertex expects artifacts (AIP_MODEL_DIR).
        const modelDir = await publishModelDir(summary.runDir)
        if (modelDir) this.note(`model copied to ${modelDir}`)
        return summary
      })
    } finally {
      progress.stop()
      interrupt.release()
    }
  }

  /** `ml train` as a SageMaker training job's container: trains on the channel's copy of the store, writes the model to SM_MODEL_DIR. */
  private async trainInSageMaker(job: import('../lib/train/sagemaker.js').SageMakerJobEnv, argv: string[]) {
    const {publishSageMakerModel, writeSageMakerFailure} = await import('../lib/train/sagemaker.js')
    try {
      const withConfig = [...argv.filter((a, i) => a !== '--config' && argv[i - 1] !== '--config' && !a.startsWith('--config=')), '--config', job.configUri, '--target', 'local']
      const {flags} = await this.parse(Train, withConfig)
      const fixed = {'data.store': job.channelDir, 'train.target': 'local', 'train.epochs': flags.epochs, 'train.backend': flags.backend}
      // A tuning job's trial: its values come as hyperparameters under the ids of tune.parameters.
      const {metricLine, trialOverrides: sageMakerTrialOverrides} = await import('../lib/train/sagemaker-tune.js')
      const first = await this.loadConfig(flags.config, fixed)
      const tuned = sageMakerTrialOverrides(first.config.tune, job.hyperparameters)
      const isTrial = Object.keys(tuned).length > 0
      const loaded = isTrial ? await this.loadConfig(flags.config, {...fixed, ...tuned}) : first
      const metric = loaded.config.tune?.metric ?? 'valAccuracy'
      const {runTraining} = await import('../lib/train/trainer.js')
      const interrupt = this.abortOnSignals()
      try {
        this.note(`SageMaker training job ${job.job}: config ${job.configUri}, dataset ${job.channelDir}${isTrial ? `, trial values ${Object.entries(tuned).map(([k, v]) => `${k}=${v}`).join(', ')}` : ''}`)
        const summary = await runTraining({
          loaded,
          resume: undefined,
          runId: undefined,
          signal: interrupt.signal,
          // SageMaker reads a tuning trial's metric from the log with the job's metric definition.
          onEvent: (event) => {
            const value = event.type === 'epoch' ? (event.metrics as unknown as Record<string, number | undefined>)[metric] : undefined
            if (isTrial && value !== undefined && Number.isFinite(value)) this.stderrLine(metricLine(metric, value))
          },
        })
        const modelDir = await publishSageMakerModel(summary.runDir, job)
        this.say(`run ${summary.runId}: ${summary.epochs} epochs, val_acc ${fmt(summary.valAccuracy)}, model in ${summary.runDir} and ${modelDir}`)
        return {...summary, modelDir}
      } finally {
        interrupt.release()
      }
    } catch (error) {
      await writeSageMakerFailure(job, error)
      throw error
    }
  }

  private async trainOnSageMaker(loaded: LoadedConfig, detach: boolean) {
    const {trainOnSageMaker} = await import('../lib/train/sagemaker.js')
    const {createSpinner} = await import('../lib/ui/spinner.js')
    const interrupt = this.abortOnSignals()
    const spinner = await createSpinner({enabled: !this.jsonEnabled()})
    try {
      const {askYesNo, interactive} = await import('../lib/ui/prompt.js')
      const result = await trainOnSageMaker(loaded, {
        detach,
        signal: interrupt.signal,
        ui: {spinner, note: (m) => this.note(m), ...(interactive() && !this.jsonEnabled() ? {ask: askYesNo} : {})},
      })
      if (result.detached) this.say(result.job)
      else if (result.run) this.say(`job ${result.job} completed: run ${result.run.runId}, val_acc ${fmt(result.run.final?.valAccuracy)}, model in ${result.run.runDir}`)
      else this.say(`job ${result.job} completed; outputs in ${result.outputDir}`)
      return result
    } finally {
      spinner.stop()
      interrupt.release()
    }
  }

  private async trainOnVertex(loaded: LoadedConfig, detach: boolean) {
    const {trainOnVertex} = await import('../lib/train/vertex.js')
    const {createSpinner} = await import('../lib/ui/spinner.js')
    const {askYesNo, interactive} = await import('../lib/ui/prompt.js')
    const interrupt = this.abortOnSignals()
    const spinner = await createSpinner({enabled: !this.jsonEnabled()})
    try {
      const result = await trainOnVertex(loaded, {
        detach,
        signal: interrupt.signal,
        ui: {spinner, note: (m) => this.note(m), ...(interactive() && !this.jsonEnabled() ? {ask: askYesNo} : {})},
      })
      if (result.detached) this.say(result.job)
      else if (result.run) {
        this.say(`job ${result.job} succeeded: run ${result.run.runId}, val_acc ${fmt(result.run.final?.valAccuracy)}, model in ${result.run.runDir}`)
      } else this.say(`job ${result.job} succeeded; outputs in ${result.outputDir}`)
      return result
    } finally {
      spinner.stop()
      interrupt.release()
    }
  }
}
