// `ml models alias <version> <alias>`: points an alias (production, staging, ...) at a version.
import {Args, Flags} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'
import {UserError} from '../../lib/errors.js'

export default class ModelsAlias extends MlCommand {
  static override summary = 'Point an alias (production, staging, or any name) at a model version.'
  static override description = `Writes <repository>/<model>/aliases.json atomically, recording the move so that \`ml models rollback\` can undo it. The model is the config's name (or --model). A running \`ml serve\` picks the move up on its next repository scan (serve.pollIntervalMs): the alias is a TF Serving version label (/v1/models/<model>/labels/<alias>), and \`ml serve --model <model>@<alias>\` serves only the aliased version; the new version is loaded and warmed up before traffic moves to it. \`ml predict --model <model>@<alias>\` uses it too. --remove deletes an alias.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> models alias 3 production',
    '<%= config.bin %> models alias 4 staging --model digits --json',
    '<%= config.bin %> models alias canary --remove',
    'curl -s localhost:8080/v1/models/digits/labels/production',
  ]

  static override args = {
    version: Args.string({description: 'Version number (or, with --remove, the alias).', required: true}),
    alias: Args.string({description: 'Alias name: letters, digits, "_" and "-", starting with a letter.'}),
  }

  static override flags = {
    model: Flags.string({summary: 'Model name (default: the config\'s name).', env: 'ML_MODEL_NAME'}),
    repository: Flags.string({summary: 'Model repository (overrides export.dir).', env: 'ML_REPOSITORY'}),
    remove: Flags.boolean({summary: 'Delete the alias named by the first argument.'}),
  }

  async run() {
    const {args, flags} = await this.parse(ModelsAlias)
    const {registryTarget} = await import('../../lib/model/registry.js')
    const {repository, name} = await registryTarget(flags, (file) => this.loadConfig(file))
    const {removeAlias, setAlias} = await import('../../lib/model/repository.js')
    if (flags.remove) {
      const {move} = await removeAlias(repository, name, args.version)
      this.say(`${name}: removed alias ${move.alias} (was version ${move.previous})`)
      return {repository, model: name, ...move}
    }
    if (!args.alias) throw new UserError('missing alias: `ml models alias <version> <alias>`', {code: 'USAGE', exit: 'usage', suggestions: ['e.g. `ml models alias 3 production`.']})
    if (!/^[1-9][0-9]*$/.test(args.version)) {
      throw new UserError(`"${args.version}" is not a version number`, {code: 'USAGE', exit: 'usage', suggestions: ['List versions with `ml models list`, then e.g. `ml models alias 3 production`.']})
    }
    const {move} = await setAlias(repository, name, args.alias, Number(args.version))
    this.say(`${name}@${move.alias} -> version ${move.version}${move.previous === null ? '' : ` (was ${move.previous})`}`)
    return {repository, model: name, ...move}
  }
}
