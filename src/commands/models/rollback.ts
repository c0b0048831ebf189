// `ml models rollback [alias]`: moves an alias back to the version it pointed at before.
import {Args, Flags} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class ModelsRollback extends MlCommand {
  static override summary = 'Move an alias (default production) back to its previous version.'
  static override description = `Undoes the latest move of the alias, from the history in aliases.json; run it again to go further back. A version deleted from the repository since is skipped. A running \`ml serve\` follows on its next repository scan, like any alias move.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> models rollback', '<%= config.bin %> models rollback staging --model digits', '<%= config.bin %> models rollback --json']

  static override args = {
    alias: Args.string({description: 'The alias to roll back.', default: 'production'}),
  }

  static override flags = {
    model: Flags.string({summary: 'Model name (default: the config\'s name).', env: 'ML_MODEL_NAME'}),
    repository: Flags.string({summary: 'Model repository (overrides export.dir).', env: 'ML_REPOSITORY'}),
  }

  async run() {
    const {args, flags} = await this.parse(ModelsRollback)
    const {registryTarget} = await import('../../lib/model/registry.js')
    const {repository, name} = await registryTarget(flags, (file) => this.loadConfig(file))
    const {rollbackAlias} = await import('../../lib/model/repository.js')
    const {move} = await rollbackAlias(repository, name, args.alias)
    this.say(`${name}@${move.alias} rolled back: version ${move.previous} -> ${move.version}`)
    return {repository, model: name, ...move}
  }
}
