// `ml <unknown command>`: says so, guesses the command meant ("ml trian" -> "ml train"), exits 2;
// under --json the error is the usual {"error": {...}} object on stdout.
import {Errors, type Hook} from '@oclif/core'
import {ExitCode, UserError, errorToJson} from '../lib/errors.js'
import {closest} from '../lib/ui/did-you-mean.js'

const hook: Hook<'command_not_found'> = async function (options) {
  const separator = options.config.topicSeparator
  const shown = (id: string) => id.replaceAll(':', separator)
  const typed = shown(options.id)
  const guess = closest(options.id, options.config.commandIDs)
  const error = new UserError(`${typed} is not an ml command`, {
    code: 'COMMAND_NOT_FOUND',
    exit: 'usage',
    suggestions: [...(guess ? [`Did you mean \`ml ${shown(guess)}\`?`] : []), 'Run `ml --help` for the list of commands.'],
    details: {command: typed, ...(guess ? {didYouMean: shown(guess)} : {})},
  })
  if ((options.argv ?? []).includes('--json')) {
    process.stdout.write(JSON.stringify(errorToJson(error)) + '\n')
    this.exit(ExitCode.usage)
  }
  throw new Errors.CLIError(error.message, {exit: ExitCode.usage, code: error.code, suggestions: error.suggestions})
}

export default hook
