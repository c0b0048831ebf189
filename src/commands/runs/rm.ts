// `ml runs rm <run...>`: deletes run directories (the latest-run pointer moves to the newest one left).
import {Flags} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class RunsRm extends MlCommand {
  static override summary = 'Delete training runs.'
  static override description = `Deletes each named run directory with its model, checkpoints and metrics. Every name is checked before anything is deleted: an unknown run deletes nothing. A run marked running is refused unless --force (when its \`ml train\` died without updating run.json). Exported model versions are not touched.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> runs rm mnist-20261203-061500', '<%= config.bin %> runs rm run-a run-b --json', '<%= config.bin %> runs rm crashed-run --force']

  static override strict = false

  static override flags = {
    force: Flags.boolean({summary: 'Also delete runs marked running.'}),
  }

  async run() {
    const {argv, flags} = await this.parse(RunsRm)
    const loaded = await this.loadConfig(flags.config)
    const {resolvePath} = await import('../../lib/config/load.js')
    const {removeRuns} = await import('../../lib/train/runs.js')
    const result = await removeRuns(resolvePath(loaded, loaded.config.train.runs), argv as string[], {force: flags.force})
    this.say(`removed ${result.removed.join(', ')}${result.latest ? `; latest run is now ${result.latest}` : ''}`)
    return result
  }
}
