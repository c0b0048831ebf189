import {MlCommand} from '../../lib/ui/command.js'

export default class ConfigValidate extends MlCommand {
  static override summary = 'Check a config file and list every problem.'
  static override description = `Reads the config, applies defaults and reports every problem at once, each with its key path, what was expected and what was found. Exits 2 when the config is invalid.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> config validate', '<%= config.bin %> config validate --config configs/quickstart.yaml --json']

  async run(): Promise<{valid: true; file: string; config: unknown}> {
    const {flags} = await this.parse(ConfigValidate)
    const loaded = await this.loadConfig(flags.config)
    this.say(`${flags.config} is valid`)
    return {valid: true, file: loaded.file, config: loaded.config}
  }
}
