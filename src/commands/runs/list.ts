// `ml runs list`: every training run of the project, one line each.
import {MlCommand} from '../../lib/ui/command.js'

export default class RunsList extends MlCommand {
  static override summary = 'List training runs: id, date, model, epochs, accuracy, backend, dataset version, status.'
  static override description = `Reads every run directory under train.runs (run.json, config.json and, once \`ml evaluate\` has run, evaluation.json), oldest first. The latest run (the one other commands use by default) is marked with *. val_acc is the validation accuracy of the epoch the model holds (an earlier one with train.earlyStopping.restoreBest, shown as "kept N"); test_acc is what \`ml evaluate\` measured. A run whose run.json cannot be read is listed as unreadable, so that it can be removed.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> runs list', '<%= config.bin %> runs list --json', '<%= config.bin %> runs list --config configs/mnist.yaml']

  async run() {
    const {flags} = await this.parse(RunsList)
    const loaded = await this.loadConfig(flags.config)
    const {resolvePath} = await import('../../lib/config/load.js')
    const {listRuns, runsTable} = await import('../../lib/train/runs.js')
    const runsDir = resolvePath(loaded, loaded.config.train.runs)
    const runs = await listRuns(runsDir)
    this.say(runs.length ? runsTable(runs) : `no runs in ${runsDir} (train one with \`ml train\`)`)
    return {runsDir, runs}
  }
}
