// A failure with an HTTP status: what every protocol handler throws, and what the server turns into
// the `{"error": "..."}` body that both KServe V2 and TF Serving specify.

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
    this.name = 'HttpError'
  }
}

export const badRequest = (message: string) => new HttpError(400, message)
export const notFound = (message: string) => new HttpError(404, message)

/** 503 with Retry-After, for load shedding and for a server that is not ready. */
export const unavailable = (message: string, retryAfterSeconds = 1) =>
  new HttpError(503, message, {'Retry-After': String(retryAfterSeconds)})
