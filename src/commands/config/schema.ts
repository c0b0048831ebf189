import {configJsonSchema} from '../../lib/config/load.js'
import {MlCommand} from '../../lib/ui/command.js'

export default class ConfigSchema extends MlCommand {
  static override summary = 'Print the JSON Schema of ml.yaml (for editor completion).'
  static override description = `Prints the JSON Schema of the config file. Save it and point your editor at it, e.g. with the YAML language server: "# yaml-language-server: $schema=./ml.schema.json" as the first line of ml.yaml.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> config schema > ml.schema.json']

  async run(): Promise<Record<string, unknown>> {
    await this.parse(ConfigSchema)
    const schema = configJsonSchema()
    if (!this.jsonEnabled()) this.log(JSON.stringify(schema, null, 2))
    return schema
  }
}
