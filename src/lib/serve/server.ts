// One server process: starts the parts (instances, scheduler, model repository), listens with node:http(s),
// and hands each request to the protocols' route tables, with auth, accounting and a graceful drain.
import type {EventEmitter} from 'node:events'
import http, {type IncomingMessage, type ServerResponse} from 'node:http'
import https from 'node:https'
import {createRequire} from 'node:module'
import type {AddressInfo} from 'node:net'
import {isUserError, UserError} from '../errors.js'
import {Admission} from './admission.js'
import {RequestAccounting} from './accounting.js'
import {bearerAuth, loadTls} from './auth.js'
import {routedSelector, type Reply, type RequestState, type ServeContext} from './context.js'
import {HttpError, unavailable} from './http-error.js'
import {Lifecycle, stopParts, type ServerParts} from './lifecycle.js'
import {JsonLog, openAccessLog, type AccessLogTarget} from './log.js'
import {startGrpc, type GrpcHandle} from './grpc/server.js'
import {ServeMetrics} from './metrics.js'
import type {ServeOptions} from './options.js'
import {servingEngine, withTfjsBackend} from '../engine/inference.js'
import {InstancePool} from './pool.js'
import {readBody} from './protocols/http.js'
import {kserveRoutes} from './protocols/kserve.js'
import {operationsRoutes} from './protocols/operations.js'
import {pageRoutes} from './protocols/page.js'
import {route, type BodyTarget, type Route} from './protocols/routes.js'
import {sagemakerRoutes} from './protocols/sagemaker.js'
import {tfservingRoutes} from './protocols/tfserving.js'
import {ModelRepository} from './repository.js'
import {Scheduler} from './scheduler.js'

export interface StartOptions {
  /** Server events (JSON lines); default: stderr. */
  log?: JsonLog
  /** Default: opened from options.accessLog. */
  accessLog?: AccessLogTarget
  /** What GET /metrics answers; cluster workers aggregate through the primary. */
  metricsText?: () => Promise<string>
  /** Extra fields on every log line (e.g. the process id under a cluster). */
  logFields?: Record<string, unknown>
}

export interface ServeHandle {
  url: string
  port: number
  /** The gRPC port (serve.grpc), when one listens. */
  grpcPort?: number
  metrics: ServeMetrics
  pool: InstancePool
  scheduler: Scheduler
  repository: ModelRepository
  /** Server events: 'draining', 'closed'. */
  events: EventEmitter
  ready(): boolean
  /** Requests (HTTP and gRPC) received and not yet answered. */
  inFlight(): number
  /** Requests (HTTP and gRPC) received since start. */
  handled(): number
  /** Readiness turns false, listening stops, queued and in-flight requests finish, instances stop. */
  close(): Promise<void>
  /**
   * Readiness turns false at once while the port keeps serving for serve.shutdownDelayMs (load
   * balancers take that long to stop sending new connections), then close(). skipDelay ends a delay
   * under way, or skips it, so the drain starts now.
   */
  shutdown(options?: {skipDelay?: boolean}): Promise<void>
}

/** Answered even while a draining server refuses requests (see Lifecycle). */
const HEALTH_PATHS = new Set(['/healthz', '/livez', '/readyz', '/v2/health/live', '/v2/health/ready', '/ping'])

/** Every protocol's routes, health checks first (they are open, and the most frequent), then the page and /openapi.json. */
export const ROUTES: readonly Route[] = [...operationsRoutes, ...kserveRoutes, ...tfservingRoutes, ...sagemakerRoutes, ...pageRoutes(() => ROUTES)]

const serverVersion = (createRequire(import.meta.url)('../../../../package.json') as {version: string}).version

function openAccess(options: ServeOptions, io: StartOptions, log: JsonLog): AccessLogTarget {
  try {
    return io.accessLog ?? openAccessLog(options.accessLog, io.logFields, (error) => log.event('error', 'access-log-failed', {reason: error.message}))
  } catch (error) {
    throw new UserError(`serve.accessLog: cannot open ${options.accessLog} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, {code: 'SERVE_ACCESS_LOG', exit: 'usage'})
  }
}

/** Instances, scheduler and repository, with every version loaded; a repository with nothing to serve is the user's error. */
async function startParts(options: ServeOptions, metrics: ServeMetrics, log: JsonLog, accessLog: AccessLogTarget): Promise<ServerParts> {
  const pool = await InstancePool.start(options.instances, options.engine, log)
  pool.on('restart', () => metrics.instanceRestarts.inc())
  const scheduler = new Scheduler(pool, options, metrics)
  const repository = new ModelRepository(options, pool, scheduler, metrics, log)
  const parts = {pool, scheduler, repository, accessLog}
  try {
    await repository.start()
    const available = [...repository.models.values()].flatMap((m) => [...m.versions.values()]).filter((v) => v.state === 'AVAILABLE')
    if (available.length === 0) {
      const problems = [...repository.models.values()].flatMap((m) =>
        m.versions.size === 0 ? [`${m.name}: no version folders`] : [...m.versions.values()].map((v) => `${m.name}/${v.version}: ${v.reason ?? v.state}`))
      throw new UserError(`nothing to serve in ${options.repository}${problems.length ? `:\n  ${problems.join('\n  ')}` : ' (no model folders with numbered versions)'}`, {
        code: 'SERVE_NO_MODEL',
        exit: 'data',
        suggestions: ['Export a model with `ml export`, or point --repository at a folder of <model>/<version>/ folders.'],
      })
    }
  } catch (error) {
    await stopParts(parts)
    throw error
  }
  return parts
}

function listenError(error: unknown, options: ServeOptions): unknown {
  const code = (error as NodeJS.ErrnoException).code
  if (code !== 'EADDRINUSE' && code !== 'EACCES' && code !== 'EADDRNOTAVAIL') return error
  return new UserError(`cannot listen on ${options.host}:${options.port}: ${code === 'EADDRINUSE' ? 'the port is in use' : code}`, {
    code: 'SERVE_LISTEN',
    exit: 'usage',
    suggestions: ['Pick another port with --port (env ML_PORT) or serve.port.'],
  })
}

function send(res: ServerResponse, reply: Reply, state: RequestState, draining: boolean): void {
  if (res.headersSent || res.destroyed) return
  const headers: Record<string, string | number> = {...reply.headers}
  if (draining) headers.Connection = 'close'
  // Which version answered (a canary split may have chosen it), in every protocol's answer.
  if (state.inference && state.version !== undefined) headers['X-Model-Version'] = state.version
  if (reply.body === undefined) {
    headers['Content-Length'] = 0
    res.writeHead(reply.status, headers)
    res.end()
    return
  }
  const text = Buffer.isBuffer(reply.body) || (typeof reply.body === 'string' && reply.contentType) ? reply.body : JSON.stringify(reply.body)
  state.bytes = Buffer.byteLength(text)
  headers['Content-Type'] = reply.contentType ?? 'application/json'
  headers['Content-Length'] = state.bytes
  res.writeHead(reply.status, headers)
  res.end(text)
}

/** The reply for a failed request; undefined when no one is left to answer (the client went away). */
function errorReply(error: unknown, state: RequestState, path: string, log: JsonLog): Reply | undefined {
  if (error instanceof HttpError) return error.status === 499 ? undefined : {status: error.status, body: {error: error.message}, headers: error.headers}
  if (isUserError(error)) return {status: 400, body: {error: error.message}}
  log.event('error', 'request-failed', {path, model: state.model, reason: error instanceof Error ? error.stack : String(error)})
  return {status: 500, body: {error: `internal error: ${error instanceof Error ? error.message : String(error)}`}}
}

export async function startServer(options: ServeOptions, io: StartOptions = {}): Promise<ServeHandle> {
  const log = io.log ?? new JsonLog(process.stderr, io.logFields)
  const auth = bearerAuth(options)
  const tls = await loadTls(options)
  const accessLog = openAccess(options, io, log)
  const metrics = new ServeMetrics()
  const parts = await startParts(options, metrics, log, accessLog)
  const accounting = new RequestAccounting(metrics, accessLog.log, parts.repository, log)
  const admission = new Admission(parts.repository, parts.scheduler, options)
  let lifecycle: Lifecycle | undefined
  const engine = await servingEngine(options.runtime, parts.pool.backend, options)
  log.event('info', 'inference-engine', {...engine})
  const ctx: ServeContext = {
    options,
    repository: parts.repository,
    scheduler: parts.scheduler,
    server: {name: 'ml', version: serverVersion, engine},
    metrics,
    draining: () => lifecycle?.draining ?? false,
    metricsText: io.metricsText ?? (() => metrics.registry.metrics()),
    metricsContentType: metrics.registry.contentType,
  }
  // A first TensorFlow.js version loaded later (a new version in the repository) starts it in the instances.
  parts.pool.on('engine', (backend: string) => {
    if (ctx.server.engine?.tfjs === backend) return
    ctx.server.engine = withTfjsBackend(engine, backend)
    log.event('info', 'inference-engine', {...ctx.server.engine})
  })

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now()
    const state: RequestState = {protocol: 'other', deadline: started + options.requestTimeoutMs, cancel: {}, inference: false, leases: [], headers: req.headers}
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q < 0 ? url : url.slice(0, q)
    res.once('close', () => {
      // The client went away before its answer: its queued work is dropped.
      if (!res.writableFinished) state.cancel.cancel?.()
      for (const lease of state.leases) lease.release()
      state.admission?.release()
    })
    accounting.begin(req, res, path, state, started)
    const body = (target?: BodyTarget) => {
      if (target !== undefined) admission.admit(req, state, target.model, routedSelector(ctx, state, target.model, target.selector))
      return readBody(req, options.maxBodyBytes)
    }
    const input = {req, path, queryText: q < 0 ? '' : url.slice(q + 1), body, denied: () => auth?.check(req)}
    // Past the shutdown delay, requests that reach the port are refused before they run, so that a load
    // balancer may safely send them to another server (see Lifecycle).
    const routed = lifecycle?.refusing && !HEALTH_PATHS.has(path) ? Promise.reject(unavailable('the server is shutting down: send the request to another server')) : route(ROUTES, ctx, state, input)
    routed.then(
      (reply) => send(res, reply, state, ctx.draining()),
      (error: unknown) => {
        const reply = errorReply(error, state, path, log)
        if (reply) send(res, reply, state, ctx.draining())
      },
    )
  }

  const serverOptions: http.ServerOptions = {
    requestTimeout: options.clientTimeoutMs,
    headersTimeout: Math.min(options.clientTimeoutMs, 10_000),
    keepAliveTimeout: 5_000,
    // How often Node checks those two timeouts (default 30 s, far too coarse for short timeouts).
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(options.clientTimeoutMs / 4))),
  }
  const server = tls ? https.createServer({...serverOptions, ...tls}, onRequest) : http.createServer(serverOptions, onRequest)
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(options.port, options.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (error) {
    await stopParts(parts)
    throw listenError(error, options)
  }
  let grpc: GrpcHandle | undefined
  if (options.grpc) {
    try {
      grpc = await startGrpc({ctx, auth, admission, log, accessLog: accessLog.log, tls})
    } catch (error) {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await stopParts(parts)
      throw error
    }
  }
  lifecycle = new Lifecycle(server, parts, accounting, log, options.shutdownDelayMs)
  if (grpc) lifecycle.listeners.push(grpc)
  const port = (server.address() as AddressInfo).port
  const scheme = tls ? 'https' : 'http'
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  const running = lifecycle
  return {
    url: `${scheme}://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}`,
    port,
    ...(grpc ? {grpcPort: grpc.port} : {}),
    metrics,
    ...parts,
    events: running.events,
    ready: () => running.ready(),
    inFlight: () => accounting.inFlight + (grpc?.inFlight() ?? 0),
    handled: () => accounting.handled + (grpc?.handled() ?? 0),
    close: () => running.close(),
    shutdown: (shutdownOptions) => running.shutdown(shutdownOptions),
  }
}
