// Stopping a training run from outside: Ctrl-C (SIGINT) or a CI runner's SIGTERM. The first signal
// says so at once and asks the loop to stop after the step in flight (it then checkpoints and exits
// 130); a second signal exits at once. The step loop yields to the event loop once per step so that
// the signal is seen at all: a loop of resolved promises never lets a signal handler run.
import {ExitCode, UserError} from '../errors.js'

export const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const

export interface StopRequest {
  /** Aborted by the first signal. */
  signal: AbortSignal
  /** Removes the signal handlers once the work is over. */
  release: () => void
}

export interface StopOptions {
  /** Where the "stopping" notices go (stderr: always, --json or not). */
  notice: (message: string) => void
  /** What the second signal does; the process exits 130 by default. */
  exitNow?: () => void
}

export function stopOnSignals(options: StopOptions): StopRequest {
  const abort = new AbortController()
  const exitNow = options.exitNow ?? (() => process.exit(ExitCode.interrupted))
  const onSignal = (name: NodeJS.Signals) => {
    const who = name === 'SIGINT' ? 'Ctrl-C' : name
    if (!abort.signal.aborted) {
      options.notice(`${who}: stopping after this step and saving a checkpoint (press Ctrl-C again to stop now, without one)`)
      abort.abort()
      return
    }
    options.notice(`${who} again: stopping now`)
    exitNow()
  }
  const handlers = STOP_SIGNALS.map((name) => [name, () => onSignal(name)] as const)
  for (const [name, handler] of handlers) process.on(name, handler)
  return {
    signal: abort.signal,
    release: () => {
      for (const [name, handler] of handlers) process.off(name, handler)
    },
  }
}

/** Lets timers, I/O and signal handlers run between two training steps. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

/** The error a stopped run ends with (exit 130); the checkpoint is already written. */
export function interruptedError(runId: string, epoch: number, step: number): UserError {
  return new UserError(`training stopped at epoch ${epoch + 1}, step ${step + 1}; checkpoint saved`, {
    code: 'INTERRUPTED',
    exit: 'interrupted',
    suggestions: [`Continue with \`ml train --resume ${runId}\`.`],
  })
}

/**
 * In a data-parallel worker process: Ctrl-C reaches every process of the terminal's process group,
 * but only the coordinator decides when to stop (it checkpoints through the workers, then closes
 * them), so the workers ignore the signals. A worker whose coordinator is gone exits on 'disconnect'.
 */
export function leaveStopSignalsToCoordinator(): void {
  for (const s of STOP_SIGNALS) process.on(s, () => {})
}
