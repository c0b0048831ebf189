// How a failure reads over gRPC: the HTTP status each handler throws (HttpError) mapped to the gRPC
// code Triton and TF Serving answer in the same case, with the same message.
import {status as Code} from '@grpc/grpc-js'
import {isUserError} from '../../errors.js'
import {HttpError} from '../http-error.js'

export {Code}

/** The gRPC code for an HTTP status (as grpc-gateway maps them, inverted). */
export function codeOf(httpStatus: number): Code {
  switch (httpStatus) {
    case 400:
    case 413:
    case 415:
    case 422:
      return Code.INVALID_ARGUMENT
    case 401:
      return Code.UNAUTHENTICATED
    case 403:
      return Code.PERMISSION_DENIED
    case 404:
      return Code.NOT_FOUND
    case 408:
    case 504:
      return Code.DEADLINE_EXCEEDED
    case 409:
      return Code.ABORTED
    case 429:
      return Code.RESOURCE_EXHAUSTED
    case 499:
      return Code.CANCELLED
    case 501:
      return Code.UNIMPLEMENTED
    case 503:
      return Code.UNAVAILABLE
    default:
      return httpStatus >= 500 ? Code.INTERNAL : Code.FAILED_PRECONDITION
  }
}

export interface Failure {
  code: Code
  message: string
  /** The HTTP status the same failure gets on the HTTP port: the `status` label of ml_serve_requests_total. */
  httpStatus: number
  /** True for the server's own faults (logged with their stack). */
  internal: boolean
}

export function failureOf(error: unknown): Failure {
  if (error instanceof HttpError) return {code: codeOf(error.status), message: error.message, httpStatus: error.status, internal: false}
  if (isUserError(error)) return {code: Code.INVALID_ARGUMENT, message: error.message, httpStatus: 400, internal: false}
  return {code: Code.INTERNAL, message: `internal error: ${error instanceof Error ? error.message : String(error)}`, httpStatus: 500, internal: true}
}
