// A route table per protocol: each route names its path pattern, methods and whether it is open
// without a token; the router picks the first match and applies auth and the method check.
import type {IncomingMessage} from 'node:http'
import type {Protocol, Reply, RequestState, ServeContext} from '../context.js'
import type {VersionSelector} from '../repository.js'
import {HttpError, notFound} from '../http-error.js'
import {allow, decodeSegment} from './http.js'

export interface RouteCall {
  req: IncomingMessage
  path: string
  /** The pattern's groups, URL-decoded (400 on a malformed one). */
  params: Array<string | undefined>
  query(): URLSearchParams
  /** True when auth is off or the request carries the token (open routes are reached either way). */
  authorised(): boolean
  /**
   * The request body, within serve.maxBodyBytes. Inference routes name the model version it is for:
   * admission then decides, before a byte is read, whether it is taken (503 when not).
   */
  body(target?: BodyTarget): Promise<Buffer>
}

export interface BodyTarget {
  model: string
  selector: VersionSelector
}

export interface Route {
  /** What the request counts as in metrics and the access log (a handler may refine it). */
  protocol: Protocol
  pattern: RegExp
  /** Methods answered (HEAD comes with GET); omitted: the handler decides. */
  methods?: readonly string[]
  /** Reachable without a token when auth is on: health checks, since probes carry no tokens. */
  open?: boolean
  handle(ctx: ServeContext, state: RequestState, call: RouteCall): Reply | Promise<Reply>
}

export interface RouteInput {
  req: IncomingMessage
  path: string
  queryText: string
  body(target?: BodyTarget): Promise<Buffer>
  /** The auth verdict for this request: an HttpError (401) when it lacks the right token. */
  denied(): HttpError | undefined
}

/** Runs the first route whose pattern matches; closed routes and unknown paths need the token. */
export async function route(routes: readonly Route[], ctx: ServeContext, state: RequestState, input: RouteInput): Promise<Reply> {
  const {req, path} = input
  let found: Route | undefined
  let match: RegExpExecArray | null = null
  for (const candidate of routes) {
    match = candidate.pattern.exec(path)
    if (match !== null) {
      found = candidate
      break
    }
  }
  if (found === undefined || !found.open) {
    const denied = input.denied()
    if (denied) {
      state.protocol = path.startsWith('/v2') ? 'kserve' : path.startsWith('/v1') ? 'tfserving' : 'other'
      throw denied
    }
  }
  if (found === undefined) throw notFound(`no such endpoint: ${req.method} ${path}`)
  state.protocol = found.protocol
  if (found.methods) allow(req, path, found.methods)
  const params = (match as RegExpExecArray).slice(1).map(decodeSegment)
  return found.handle(ctx, state, {req, path, params, query: () => new URLSearchParams(input.queryText), authorised: () => input.denied() === undefined, body: input.body})
}
