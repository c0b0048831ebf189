// `ml runs show <run>`: one run in full: settings, dataset, metrics per epoch, test result.
import {Args} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class RunsShow extends MlCommand {
  static override summary = 'Show one training run: what it trained, on what, and its metrics per epoch.'
  static override description = `Prints the run's status, model, backend, dataset version, the epoch its model holds (restoreBest), final and test metrics and the per-epoch metrics table. --json adds the run's full config. Without a run id: the latest run.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> runs show', '<%= config.bin %> runs show mnist-20261203-061500', '<%= config.bin %> runs show mnist-20261203-061500 --json']

  static override args = {
    run: Args.string({description: 'Run id or run directory (default: the latest run).'}),
  }

  async run() {
    const {args, flags} = await this.parse(RunsShow)
    const loaded = await this.loadConfig(flags.config)
    const {resolvePath} = await import('../../lib/config/load.js')
    const {runText, showRun} = await import('../../lib/train/runs.js')
    const details = await showRun(resolvePath(loaded, loaded.config.train.runs), args.run)
    this.say(runText(details))
    return details
  }
}
