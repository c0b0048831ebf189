// A status line for waiting on something remote (a Vertex AI job): an ora spinner on a terminal
// (stderr), one plain line per change when stderr is a pipe (CI logs), nothing under --json.
import type {Ora} from 'ora'

export interface Spinner {
  /** Replaces the status text (a new line when not on a terminal). */
  update(text: string): void
  succeed(text: string): void
  fail(text: string): void
  /** Clears the spinner (e.g. before asking a question). */
  stop(): void
}

export async function createSpinner(options: {enabled: boolean; stream?: NodeJS.WriteStream}): Promise<Spinner> {
  const stream = options.stream ?? process.stderr
  if (!options.enabled) return {update() {}, succeed() {}, fail() {}, stop() {}}
  if (!stream.isTTY) {
    let last = ''
    const line = (text: string) => {
      if (text !== last) stream.write(text + '\n')
      last = text
    }
    return {update: line, succeed: line, fail: line, stop() {}}
  }
  const {default: ora} = await import('ora')
  let spinner: Ora | undefined
  return {
    update(text) {
      if (spinner) spinner.text = text
      else spinner = ora({text, stream, discardStdin: false}).start()
    },
    succeed(text) {
      const current = spinner ?? ora({stream})
      current.succeed(text)
      spinner = undefined
    },
    fail(text) {
      const current = spinner ?? ora({stream})
      current.fail(text)
      spinner = undefined
    },
    stop() {
      spinner?.stop()
      spinner = undefined
    },
  }
}
