// The two kinds of failure a user can meet: their own mistake (UserError, never a stack trace) and
// our bug (anything else). Every UserError carries an exit code from the documented table below.

/** Documented exit codes, shown in `--help` and the README. */
export const ExitCode = {
  ok: 0,
  /** An unexpected failure: a bug in ml. */
  internal: 1,
  /** Invalid config file, flag or argument. */
  usage: 2,
  /** Input data missing, unreadable or corrupt (images, dataset shards, run directories). */
  data: 3,
  /** Training failed (diverged, a worker died, checkpoint unusable). */
  training: 4,
  /** A remote service or peer failed (network, cloud API, broker). */
  service: 5,
  /** A service level objective was violated (`ml monitor --check`). */
  slo: 6,
  /** Too little data to decide yet (`ml monitor --check` on a canary: check again later). */
  pending: 7,
  /** Interrupted by SIGINT/SIGTERM before finishing (what was done is kept). */
  interrupted: 130,
} as const

export type ExitCodeName = keyof typeof ExitCode

export const EXIT_CODES_HELP = `EXIT CODES
  0    success
  1    internal error (a bug in ml: please report it)
  2    invalid config, flag or argument
  3    input data missing, unreadable or corrupt
  4    training failed
  5    a remote service or peer failed
  6    a service level objective was violated, or a canary must roll back (ml monitor --check)
  7    not enough requests yet to judge a canary (ml monitor --check): check again later
  130  interrupted (work already done is kept)`

export interface UserErrorOptions {
  /** Machine-readable code, e.g. CONFIG_INVALID. */
  code: string
  /** Exit code name from {@link ExitCode}. Defaults to `usage`. */
  exit?: ExitCodeName
  /** What the user can do about it. */
  suggestions?: string[]
  /** Structured details for `--json` consumers (e.g. the list of config issues). */
  details?: unknown
  cause?: unknown
}

/** A failure caused by the user's input or environment: reported without a stack trace. */
export class UserError extends Error {
  readonly code: string
  readonly exitCode: number
  readonly suggestions: string[]
  readonly details: unknown

  constructor(message: string, options: UserErrorOptions) {
    super(message, {cause: options.cause})
    this.name = 'UserError'
    this.code = options.code
    this.exitCode = ExitCode[options.exit ?? 'usage']
    this.suggestions = options.suggestions ?? []
    this.details = options.details
  }
}

export function isUserError(error: unknown): error is UserError {
  return error instanceof UserError
}

/** The `{"error": {...}}` object printed on stdout under `--json`. */
export interface ErrorJson {
  error: {
    code: string
    message: string
    exitCode: number
    suggestions?: string[]
    details?: unknown
  }
}

export function errorToJson(error: unknown): ErrorJson {
  if (isUserError(error)) {
    return {
      error: {
        code: error.code,
        message: error.message,
        exitCode: error.exitCode,
        ...(error.suggestions.length > 0 ? {suggestions: error.suggestions} : {}),
        ...(error.details === undefined ? {} : {details: error.details}),
      },
    }
  }
  const message = error instanceof Error ? error.message : String(error)
  // oclif's own parse errors (unknown flag, missing argument) are usage errors.
  const oclif = (error as {oclif?: {exit?: number}} | undefined)?.oclif
  const exitCode = typeof oclif?.exit === 'number' ? oclif.exit : ExitCode.internal
  return {error: {code: exitCode === ExitCode.usage ? 'USAGE' : 'INTERNAL', message, exitCode}}
}
