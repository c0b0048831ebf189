// Base class of every `ml` command: the shared --config flag, --json output, and one way of
// reporting failures (user mistakes without stack traces, with the documented exit codes).
import {Command, Errors, Flags, type Interfaces} from '@oclif/core'
import {DEFAULT_CONFIG_PATH, loadConfig, type LoadedConfig} from '../config/load.js'
import {errorToJson, EXIT_CODES_HELP, isUserError} from '../errors.js'

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof MlCommand)['baseFlags'] & T['flags']>

export abstract class MlCommand extends Command {
  static override enableJsonFlag = true

  static override baseFlags = {
    config: Flags.string({
      char: 'c',
      summary: 'Config file.',
      env: 'ML_CONFIG',
      default: DEFAULT_CONFIG_PATH,
      helpGroup: 'GLOBAL',
    }),
  }

  /** Appended to every command's description so that `--help` documents the exit codes. */
  static exitCodesHelp = EXIT_CODES_HELP

  /** Loads the config named by --config, with dotted-key overrides from flags. */
  protected async loadConfig(file: string, overrides: Record<string, unknown> = {}): Promise<LoadedConfig> {
    return loadConfig(file, overrides)
  }

  /** Human-readable output: silent under --json, so stdout holds exactly one JSON object. */
  protected say(message = ''): void {
    if (!this.jsonEnabled()) this.log(message)
  }

  /**
   * An AbortSignal that SIGINT and SIGTERM abort, for long commands that stop cleanly (checkpoint,
   * commit, cancel); release() removes the handlers once the work is over.
   */
  protected abortOnSignals(): {signal: AbortSignal; release: () => void} {
    const abort = new AbortController()
    const onSignal = () => abort.abort()
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    return {
      signal: abort.signal,
      release: () => {
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
      },
    }
  }

  /**
   * A line on stderr, with --json too (oclif's logToStderr is silent under --json): progress of long
   * work and notices that must not be missed, such as "stopping after this step".
   */
  protected stderrLine(message: string): void {
    process.stderr.write(message + '\n')
  }

  /** Progress and diagnostics: stderr, never stdout. */
  protected note(message: string): void {
    if (!this.jsonEnabled()) this.logToStderr(message)
  }

  protected override async catch(error: Error & {exitCode?: number}): Promise<never> {
    if (this.jsonEnabled()) {
      const json = errorToJson(error)
      this.logJson(json)
      if (!isUserError(error) && json.error.exitCode === 1) this.logToStderr(error.stack ?? String(error))
      throw new Errors.ExitError(json.error.exitCode)
    }
    if (isUserError(error)) {
      throw new Errors.CLIError(error.message, {
        exit: error.exitCode,
        code: error.code,
        suggestions: error.suggestions.length > 0 ? error.suggestions : undefined,
      })
    }
    throw error
  }
}
