// Who may call the server and over what: the bearer token every endpoint but the health checks
// requires, and the TLS certificate pair; both read and checked at startup, before any instance runs.
import {createHash, timingSafeEqual} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import type {IncomingMessage} from 'node:http'
import {createSecureContext} from 'node:tls'
import {UserError} from '../errors.js'
import {HttpError} from './http-error.js'
import type {ServeOptions} from './options.js'

export interface BearerAuth {
  /** undefined when the request carries the token, else the 401 to answer. */
  check(req: IncomingMessage): HttpError | undefined
  /** The same verdict on an Authorization value (gRPC sends it as `authorization` metadata). */
  checkHeader(header: string | undefined): HttpError | undefined
}

// Digests have one length whatever was sent, so that timingSafeEqual can compare them.
function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/** The token from serve.auth.tokenEnv; undefined when auth is off. */
export function bearerAuth(options: ServeOptions): BearerAuth | undefined {
  if (!options.auth) return undefined
  const value = process.env[options.auth.tokenEnv]
  if (!value) {
    throw new UserError(`serve.auth.tokenEnv names ${options.auth.tokenEnv}, which is not set`, {
      code: 'SERVE_TOKEN_MISSING',
      exit: 'usage',
      suggestions: [`export ${options.auth.tokenEnv}=<a long random string>, or remove serve.auth`],
    })
  }
  const token = digest(value)
  const auth: BearerAuth = {
    check: (req) => auth.checkHeader(req.headers.authorization),
    checkHeader(sent) {
      const header = sent ?? ''
      const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
      if (match === null) {
        return new HttpError(401, header ? 'the Authorization header must be "Bearer <token>"' : 'a bearer token is required (Authorization: Bearer <token>)', {'WWW-Authenticate': 'Bearer realm="ml"'})
      }
      if (!timingSafeEqual(digest(match[1]!), token)) {
        return new HttpError(401, 'invalid bearer token', {'WWW-Authenticate': 'Bearer realm="ml", error="invalid_token"'})
      }
      return undefined
    },
  }
  return auth
}

/** The PEM pair from serve.tls, checked to form a usable context; undefined when TLS is off. */
export async function loadTls(options: ServeOptions): Promise<{cert: Buffer; key: Buffer} | undefined> {
  if (!options.tls) return undefined
  const read = (file: string, what: string) => readFile(file).catch((error: NodeJS.ErrnoException) => {
    throw new UserError(`serve.tls.${what}: cannot read ${file} (${error.code ?? error.message})`, {code: 'SERVE_TLS_FILE', exit: 'usage'})
  })
  const tls = {cert: await read(options.tls.cert, 'cert'), key: await read(options.tls.key, 'key')}
  try {
    // Checked before any instance starts: a bad pair must not leave worker threads behind.
    createSecureContext(tls)
  } catch (error) {
    throw new UserError(`serve.tls: ${options.tls.cert} and ${options.tls.key} are not a usable PEM certificate and key (${(error as Error).message})`, {code: 'SERVE_TLS_FILE', exit: 'usage'})
  }
  return tls
}
