// Yes/no questions on the terminal (stderr, so stdout stays clean), for the rare decision a command
// cannot take alone, such as whether Ctrl-C should also cancel a remote job.
import {createInterface} from 'node:readline/promises'

/** True when a person can answer: stdin and stderr are both terminals. */
export const interactive = () => Boolean(process.stdin.isTTY && process.stderr.isTTY)

/** Asks `question`; only y or yes (any case) is a yes. Ctrl-C or end of input answers no. */
export async function askYesNo(question: string): Promise<boolean> {
  const rl = createInterface({input: process.stdin, output: process.stderr})
  const aborted = new AbortController()
  rl.once('SIGINT', () => aborted.abort())
  rl.once('close', () => aborted.abort())
  try {
    const answer = await rl.question(question, {signal: aborted.signal})
    return /^y(es)?$/i.test(answer.trim())
  } catch {
    return false
  } finally {
    rl.close()
  }
}
