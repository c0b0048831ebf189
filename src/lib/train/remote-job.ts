// Following a job that runs on a cloud service (a Vertex AI or SageMaker training or tuning job): the
// polling loop and what Ctrl-C does meanwhile, with each service's states, errors and wording as parameters.
import {sleep} from '../abortable.js'
import {UserError} from '../errors.js'
import type {Spinner} from '../ui/spinner.js'

/** How the command that follows a job talks to the user. */
export interface RemoteJobUi {
  spinner: Spinner
  /** Diagnostics on stderr (silent under --json). */
  note(message: string): void
  /** Asks a yes/no question on the terminal; absent when not interactive. */
  ask?: (question: string) => Promise<boolean>
}

/** Polls that may fail in a row (service briefly unavailable) before following gives up. */
export const MAX_POLL_FAILURES = 8

/**
 * How often a followed job is read: the environment variable `variable` in milliseconds (tests set a
 * few), else every 15 s; a job's state changes on a scale of minutes and the services rate-limit reads.
 */
export const pollIntervalFrom = (variable: string, env: NodeJS.ProcessEnv = process.env) => Math.max(10, Number(env[variable]) || 15_000)

export interface FollowRemoteJobOptions<V extends {state: string}> {
  /** States after which the job never changes again. */
  finalStates: ReadonlySet<string>
  /** Read errors worth another try (the service briefly unavailable); any other error ends following at once. */
  isTransient: (error: unknown) => boolean
  /** Time between reads, and after a failed read. */
  pollMs: number
  /** Failed reads in a row that end following with the last error (MAX_POLL_FAILURES). */
  maxFailures?: number
  /** Called with each state the job is seen in (the first read included). */
  onState?: (view: V) => void
  /** Called with every view read (for progress that changes within a state: trial counters, secondary states). */
  onRead?: (view: V) => void
  /** Aborting stops following (the job goes on); the last view read is returned. */
  signal?: AbortSignal
}

/**
 * Reads a job until it reaches a final state or `signal` aborts, and returns the last view. Brief
 * service trouble is waited out; a job that cannot be read `maxFailures` times in a row, or a read that
 * fails otherwise, ends following with that read's error.
 */
export async function followRemoteJob<V extends {state: string}>(read: () => Promise<V>, options: FollowRemoteJobOptions<V>): Promise<V> {
  const {signal, pollMs} = options
  const maxFailures = options.maxFailures ?? MAX_POLL_FAILURES
  let last: V | undefined
  let failures = 0
  for (;;) {
    let view: V
    try {
      view = await read()
      failures = 0
    } catch (error) {
      if (!options.isTransient(error) || ++failures >= maxFailures) throw error
      await sleep(pollMs, signal)
      if (signal?.aborted && last) return last
      continue
    }
    if (!last || view.state !== last.state) options.onState?.(view)
    options.onRead?.(view)
    last = view
    if (options.finalStates.has(view.state) || signal?.aborted) return view
    await sleep(pollMs, signal)
    if (signal?.aborted) return last
  }
}

/** A job that Ctrl-C interrupted while it was being followed, in its service's words. */
export interface InterruptedJob {
  /** The service as the user knows it: `Vertex AI`, `SageMaker`. */
  service: string
  /** What the job is: `job`, `training job`, `tuning job`. */
  kind: string
  name: string
  /** The service's word for ending a job: cancel (Vertex AI) or stop (SageMaker). */
  verb: 'cancel' | 'stop'
  /** How a job left running is looked at again (`follow it with`, `see it with`), before `ml train status <name>`. */
  lookAgain: string
  /** Asks the service to end the job; returns its state after the request. */
  end: () => Promise<{state: string}>
  /** What the INTERRUPTED error carries (the command's result so far); `state` is the job's after the request. */
  details: Record<string, unknown>
}

const VERBS = {cancel: ['Cancel', 'cancelling', 'cancelled'], stop: ['Stop', 'stopping', 'stopped']} as const

/**
 * After Ctrl-C while following a job: on a terminal, asks whether to end the job too (no: it goes on,
 * and the command returns as detached); elsewhere (CI, --json) ends it, as a CI runner cancelling a
 * step expects. Returns undefined when the job keeps running; throws INTERRUPTED (exit 130) once it is ended.
 */
export async function interruptedJob(ui: Pick<RemoteJobUi, 'note' | 'ask'>, job: InterruptedJob): Promise<undefined> {
  const [ask, ending, ended] = VERBS[job.verb]
  const {service, kind, name} = job
  if (ui.ask && !(await ui.ask(`${ask} ${service} ${kind} ${name}? [y/N] `))) {
    ui.note(`${kind} ${name} keeps running; ${job.lookAgain} \`ml train status ${name}\``)
    return undefined
  }
  if (!ui.ask) ui.note(`interrupted (not a terminal, so not asking): ${ending} ${kind} ${name}`)
  const after = await job.end()
  throw new UserError(`interrupted: ${service} ${kind} ${name} was ${ended} (${after.state})`, {
    code: 'INTERRUPTED',
    exit: 'interrupted',
    details: {...job.details, state: after.state},
  })
}
