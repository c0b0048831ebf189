// `ml runs compare <run...>`: metrics side by side, the config keys that differ, and the curves in one PNG.
import {Flags} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class RunsCompare extends MlCommand {
  static override summary = 'Compare training runs: metrics side by side, config differences, curves on shared axes.'
  static override description = `Prints one column per run (final and best validation accuracy, test accuracy, speed, epochs), then every config key whose value differs between the runs, and writes their loss and accuracy curves on shared axes to a PNG (train solid, validation dashed, one colour per run; default <train.runs>/compare.png, or --png).

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> runs compare mnist-20261203-061500 mnist-20261203-070000',
    '<%= config.bin %> runs compare run-a run-b run-c --png compare.png',
    '<%= config.bin %> runs compare run-a run-b --json',
  ]

  static override strict = false

  static override args = {}

  static override flags = {
    png: Flags.string({summary: 'Where to write the curves (PNG).', helpValue: '<file>'}),
  }

  async run() {
    const {argv, flags} = await this.parse(RunsCompare)
    const loaded = await this.loadConfig(flags.config)
    const {resolvePath} = await import('../../lib/config/load.js')
    const {compareRuns, comparisonText} = await import('../../lib/train/runs.js')
    const comparison = await compareRuns(resolvePath(loaded, loaded.config.train.runs), argv as string[], flags.png ? {png: flags.png} : {})
    this.say(comparisonText(comparison))
    return comparison
  }
}
