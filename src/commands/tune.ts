// `ml tune`: hyperparameter tuning on Vertex AI over the config keys in tune.parameters; ends with a
// table of trials (parameters, reported metric, best marked).
import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'

export default class Tune extends MlCommand {
  static override summary = 'Tune hyperparameters with a Vertex AI hyperparameter tuning job.'
  static override description = `Submits a HyperparameterTuningJob: each trial is \`ml train\` in the ml container (train.vertex) with the trial's values for the config keys in tune.parameters (passed as --<key with dots as _>=<value>), and reports tune.metric after every epoch in the hypertune format Vertex AI reads. The study maximizes accuracies and minimizes losses (tune.goal overrides). The command follows the job and prints a table of trials, the best one marked with *; --detach returns after submitting. Ctrl-C stops following (the job goes on; \`ml train cancel <job>\` stops it).

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> tune', '<%= config.bin %> tune --json', '<%= config.bin %> tune --detach']

  static override flags = {
    detach: Flags.boolean({summary: 'Print the job name and return instead of following the job.'}),
  }

  async run() {
    const {flags} = await this.parse(Tune)
    const loaded = await this.loadConfig(flags.config)
    const {runTuning, trialTable, tuneSettings} = await import('../lib/train/tune.js')
    const {createSpinner} = await import('../lib/ui/spinner.js')
    const interrupt = this.abortOnSignals()
    const spinner = await createSpinner({enabled: !this.jsonEnabled()})
    try {
      const result = await runTuning(loaded, {detach: flags.detach, signal: interrupt.signal, ui: {spinner, note: (m) => this.note(m)}})
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
}
