// `ml tune`: hyperparameter tuning on Vertex AI over the config keys in tune.parameters; ends with a
// table of trials (parameters, reported metric, best marked).
import {Flags} from '@oclif/core'
import type {LoadedConfig} from '../lib/config/load.js'
import {UserError} from '../lib/errors.js'
import {MlCommand} from '../lib/ui/command.js'

export default class Tune extends MlCommand {
  static override summary = 'Tune hyperparameters: a Vertex AI or SageMaker hyperparameter tuning job, or trials on this machine (--target local).'
  static override description = `Submits a HyperparameterTuningJob: each trial is \`ml train\` in the ml container (train.vertex) with the trial's values for the config keys in tune.parameters (passed as --<key with dots as _>=<value>), and reports tune.metric after every epoch in the hypertune format Vertex AI reads. The study maximizes accuracies and minimizes losses (tune.goal overrides). The command follows the job and prints a table of trials, the best one marked with *; --detach returns after submitting. Ctrl-C stops following (the job goes on; \`ml train cancel <job>\` stops it).

--target sagemaker (the default when train.target is sagemaker) submits a SageMaker HyperParameterTuningJob instead: its trials are training jobs of train.sagemaker's image, as \`ml train --target sagemaker\` makes them; each gets its values in hyperparameters.json and prints \`ml-metric <tune.metric>=<value>\` after every epoch, which the job's metric definition reads. tune.algorithm default is Bayesian search, random Random, grid Grid (values lists only), halving Hyperband. Ctrl-C asks whether to stop the job (on a terminal) or stops it (elsewhere); \`ml train status|cancel <tuning job>\` reads or stops it later.

--target local (or tune.target: local) runs the trials here instead, as \`ml train\` processes (tune.parallelTrials at once, at most one per core), each a run in train.runs named <study>-t<N>, with the same parameters and the same table. tune.algorithm random trains every trial for train.epochs; halving (the local default) is successive halving: every trial trains train.epochs / eta^k epochs, the best 1/eta (tune.eta, default 3) continue eta times longer, until the last ones reach train.epochs. The study is saved in <train.runs>/.tune/<study>.json after every trial: Ctrl-C stops it (trials checkpoint), and running the command again continues it (--study names it; default <name>-tune).

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> tune',
    '<%= config.bin %> tune --json',
    '<%= config.bin %> tune --detach',
    '<%= config.bin %> tune --target sagemaker --detach',
    '<%= config.bin %> tune --target local',
    '<%= config.bin %> tune --target local --study lr-search --parallel 2 --json',
  ]

  static override flags = {
    detach: Flags.boolean({summary: 'Print the job name and return instead of following the job.'}),
    target: Flags.string({summary: 'Where trials run (overrides tune.target).', options: ['vertex', 'sagemaker', 'local'], env: 'ML_TUNE_TARGET'}),
    study: Flags.string({summary: 'With --target local: the study to start or continue (default <name>-tune).'}),
    parallel: Flags.integer({summary: 'With --target local: trials at once (default tune.parallelTrials, at most the cores).', min: 1}),
  }

  async run() {
    const {flags} = await this.parse(Tune)
    const loaded = await this.loadConfig(flags.config, {'tune.target': flags.target})
    const {runTuning, trialTable, tuneSettings} = await import('../lib/train/tune.js')
    const target = loaded.config.tune?.target ?? (loaded.config.train.target === 'sagemaker' ? 'sagemaker' : 'vertex')
    if (target === 'local') return this.tuneLocally(loaded, flags)
    const {createSpinner} = await import('../lib/ui/spinner.js')
    const {askYesNo, interactive} = await import('../lib/ui/prompt.js')
    const interrupt = this.abortOnSignals()
    const spinner = await createSpinner({enabled: !this.jsonEnabled()})
    try {
      const options = {detach: flags.detach, signal: interrupt.signal, ui: {spinner, note: (m: string) => this.note(m)}}
      // SageMaker's Ctrl-C asks whether to stop the job (on a terminal); Vertex AI's leaves it running.
      const result =
        target === 'sagemaker'
          ? await (await import('../lib/train/sagemaker-tune.js')).tuneOnSageMaker(loaded, {
              ...options,
              ui: {...options.ui, ...(interactive() && !this.jsonEnabled() ? {ask: askYesNo} : {})},
            })
          : await runTuning(loaded, options)
      if (result.detached && result.trials.length === 0) {
        this.say(result.job)
        return result
      }
      this.say(trialTable(result.trials, tuneSettings(loaded)))
      if (result.best) this.say(`best: trial ${result.best.id}, ${result.metric} ${result.best.metric!.toFixed(4)} (${Object.entries(result.best.parameters).map(([k, v]) => `${k}=${v}`).join(', ')})`)
      return result
    } finally {
      spinner.stop()
      interrupt.release()
    }
  }

  private async tuneLocally(loaded: LoadedConfig, flags: {study?: string; parallel?: number; detach: boolean}) {
    if (flags.detach) throw new UserError('--detach only applies to tuning on Vertex AI or SageMaker', {code: 'USAGE', exit: 'usage'})
    const {runLocalTuning} = await import('../lib/train/tune-local.js')
    const {trialTable, tuneSettings} = await import('../lib/train/tune.js')
    const interrupt = this.abortOnSignals()
    try {
      const result = await runLocalTuning(loaded, {
        ...(flags.study ? {study: flags.study} : {}),
        ...(flags.parallel ? {parallel: flags.parallel} : {}),
        signal: interrupt.signal,
        onTrial: ({trial, epochs, phase}) => {
          if (phase === 'start') this.note(`trial ${trial.id} (${Object.entries(trial.parameters).map(([k, v]) => `${k}=${v}`).join(', ')}): training to epoch ${epochs}`)
          else this.note(`trial ${trial.id}: ${trial.state === 'FAILED' ? `failed: ${trial.error}` : `${loaded.config.tune!.metric} ${trial.metric?.toFixed(4)} after ${trial.epochs} epochs`}`)
        },
      })
      if (result.resumed) this.note(`continued study ${result.study}`)
      this.say(trialTable(result.trials, tuneSettings(loaded)))
      if (!result.best) {
        throw new UserError(`no trial of study ${result.study} succeeded`, {code: 'TUNE_FAILED', exit: 'training', details: result, suggestions: [`See the trials in ${result.studyFile}.`]})
      }
      this.say(`best: trial ${result.best.id} (run ${result.best.runId}), ${result.metric} ${result.best.metric!.toFixed(4)} (${Object.entries(result.best.parameters).map(([k, v]) => `${k}=${v}`).join(', ')})`)
      return result
    } finally {
      interrupt.release()
    }
  }
}
