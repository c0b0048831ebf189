// `ml models list`: the versions in the model repository, with formats, accuracy, dataset version and aliases.
import {Flags} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class ModelsList extends MlCommand {
  static override summary = 'List exported model versions: formats, test accuracy, dataset version, aliases.'
  static override description = `Reads the model repository (export.dir, or --repository) written by \`ml export\`: for every version of every model folder (or only --model), its formats, the test accuracy and dataset version from its model card, and the aliases (\`ml models alias\`) that point at it.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> models list', '<%= config.bin %> models list --model digits --json', '<%= config.bin %> models list --repository ./models']

  static override flags = {
    model: Flags.string({summary: 'Only this model (default: every model in the repository).', env: 'ML_MODEL_NAME'}),
    repository: Flags.string({summary: 'Model repository (overrides export.dir).', env: 'ML_REPOSITORY'}),
  }

  async run() {
    const {flags} = await this.parse(ModelsList)
    const {registryDir} = await import('../../lib/model/registry.js')
    const repository = await registryDir(flags.config, flags.repository, (file) => this.loadConfig(file))
    const {listRegistry, registryTable} = await import('../../lib/model/registry.js')
    const versions = await listRegistry(repository, flags.model ? [flags.model] : undefined)
    this.say(versions.length ? registryTable(versions) : `no exported models in ${repository} (export one with \`ml export\`)`)
    return {repository, versions}
  }
}
