// One server process: node:http(s) routing for KServe V2, TF Serving and health/metrics endpoints,
// body limits, bearer auth, access log and metrics per request, and a graceful drain on close() (after
// the shutdown delay, on shutdown()).
import {createHash, timingSafeEqual} from 'node:crypto'
import {EventEmitter, once} from 'node:events'
import {readFile} from 'node:fs/promises'
import http, {type IncomingMessage, type ServerResponse} from 'node:http'
import https from 'node:https'
import {createSecureContext} from 'node:tls'
import {createRequire} from 'node:module'
import net, {type AddressInfo} from 'node:net'
import {setTimeout as delay} from 'node:timers/promises'
import {isUserError, UserError} from '../errors.js'
import type {Reply, RequestState, ServeContext} from './context.js'
import {HttpError, notFound, unavailable} from './http-error.js'
import * as kserve from './kserve.js'
import {JsonLog, openAccessLog, type AccessLogTarget} from './log.js'
import {ServeMetrics} from './metrics.js'
import type {ServeOptions} from './options.js'
import {servingEngine} from '../engine/inference.js'
import {InstancePool} from './pool.js'
import {ModelRepository, type VersionSelector} from './repository.js'
import {Scheduler} from './scheduler.js'
import * as tfserving from './tfserving.js'

/**
 * How long a draining server refuses new requests (503) before it closes its port, and then how long
 * it keeps idle connections open for requests already on their way.
 */
const DRAIN_REFUSE_MS = 500
const HEALTH_PATHS = new Set(['/healthz', '/livez', '/readyz', '/v2/health/live', '/v2/health/ready'])

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
  metrics: ServeMetrics
  pool: InstancePool
  scheduler: Scheduler
  repository: ModelRepository
  /** Server events: 'draining', 'closed'. */
  events: EventEmitter
  ready(): boolean
  inFlight(): number
  /** Requests received since start. */
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

const KSERVE_MODEL = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(?:\/(ready|infer))?$/
const TF_MODEL = /^\/v1\/models\/([^/:]+)(?:\/versions\/([^/:]+)|\/labels\/([^/:]+))?(?:\/(metadata)|:([a-zA-Z]+))?$/
const JSON_TYPES = /^(application\/(json|[\w.+-]+\+json|x-www-form-urlencoded)|text\/(json|plain))$/i
const IMAGE_TYPES = /^(image\/[\w.+-]+|application\/octet-stream)$/i

const serverVersion = (createRequire(import.meta.url)('../../../../package.json') as {version: string}).version

function decodeSegment(segment: string | undefined): string | undefined {
  if (segment === undefined) return undefined
  try {
    return decodeURIComponent(segment)
  } catch {
    throw new HttpError(400, `malformed URL segment ${JSON.stringify(segment)}`)
  }
}

function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim()
}

/** JSON endpoints also take curl -d's default form type and text/plain, as TF Serving does. */
function requireJson(req: IncomingMessage): void {
  const type = mediaType(req)
  if (type !== '' && !JSON_TYPES.test(type)) throw new HttpError(415, `Content-Type ${type} is not accepted here; send application/json`)
}

/** A body of JSON and binary tensor data is octet-stream, though Triton (and so its clients) also lets it go as JSON or untyped. */
function requireJsonOrBinary(req: IncomingMessage): void {
  const type = mediaType(req)
  if (type !== '' && !JSON_TYPES.test(type) && type.toLowerCase() !== 'application/octet-stream') {
    throw new HttpError(415, `Content-Type ${type} is not accepted here; send application/octet-stream (the JSON request followed by binary tensor data)`)
  }
}

function allow(req: IncomingMessage, path: string, ...methods: string[]): void {
  const method = req.method ?? 'GET'
  if (methods.includes(method) || (method === 'HEAD' && methods.includes('GET'))) return
  const allowed = methods.includes('GET') ? [...methods, 'HEAD'] : methods
  throw new HttpError(405, `${method} is not allowed on ${path}; use ${allowed.join(' or ')}`, {Allow: allowed.join(', ')})
}

function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > max) return Promise.reject(new HttpError(413, `the request body (${declared} bytes) is over serve.maxBodyBytes (${max})`, {Connection: 'close'}))
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > max) {
        req.off('data', onData)
        reject(new HttpError(413, `the request body is over serve.maxBodyBytes (${max} bytes)`, {Connection: 'close'}))
        return
      }
      chunks.push(chunk)
    }
    req.on('data', onData)
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)))
    req.once('error', reject)
  })
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

export async function startServer(options: ServeOptions, io: StartOptions = {}): Promise<ServeHandle> {
  const log = io.log ?? new JsonLog(process.stderr, io.logFields)
  let token: Buffer | undefined
  if (options.auth) {
    const value = process.env[options.auth.tokenEnv]
    if (!value) {
      throw new UserError(`serve.auth.tokenEnv names ${options.auth.tokenEnv}, which is not set`, {
        code: 'SERVE_TOKEN_MISSING',
        exit: 'usage',
        suggestions: [`export ${options.auth.tokenEnv}=<a long random string>, or remove serve.auth`],
      })
    }
    token = digest(value)
  }
  let tls: {cert: Buffer; key: Buffer} | undefined
  if (options.tls) {
    const read = (file: string, what: string) => readFile(file).catch((error: NodeJS.ErrnoException) => {
      throw new UserError(`serve.tls.${what}: cannot read ${file} (${error.code ?? error.message})`, {code: 'SERVE_TLS_FILE', exit: 'usage'})
    })
    tls = {cert: await read(options.tls.cert, 'cert'), key: await read(options.tls.key, 'key')}
    try {
      // Checked before any instance starts: a bad pair must not leave worker threads behind.
      createSecureContext(tls)
    } catch (error) {
      throw new UserError(`serve.tls: ${options.tls.cert} and ${options.tls.key} are not a usable PEM certificate and key (${(error as Error).message})`, {code: 'SERVE_TLS_FILE', exit: 'usage'})
    }
  }

  let accessLog: AccessLogTarget
  try {
    accessLog = io.accessLog ?? openAccessLog(options.accessLog, io.logFields, (error) => log.event('error', 'access-log-failed', {reason: error.message}))
  } catch (error) {
    throw new UserError(`serve.accessLog: cannot open ${options.accessLog} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, {code: 'SERVE_ACCESS_LOG', exit: 'usage'})
  }

  const metrics = new ServeMetrics()
  const pool = await InstancePool.start(options.instances, options.engine, log)
  pool.on('restart', () => metrics.instanceRestarts.inc())
  const scheduler = new Scheduler(pool, options, metrics)
  const repository = new ModelRepository(options, pool, scheduler, metrics, log)
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
    await repository.stop()
    scheduler.close()
    await pool.close()
    await accessLog.close()
    throw error
  }

  const engine = await servingEngine(options.runtime, pool.backend, options)
  log.event('info', 'inference-engine', {...engine})
  const ctx: ServeContext = {options, repository, scheduler, server: {name: 'ml', version: serverVersion, engine}, metrics}
  const events = new EventEmitter()
  let draining = false
  let refusing = false
  let inFlight = 0
  let handled = 0
  const metricsText = io.metricsText ?? (() => metrics.registry.metrics())

  const authorised = (req: IncomingMessage): HttpError | undefined => {
    if (token === undefined) return undefined
    const header = req.headers.authorization ?? ''
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (match === null) {
      return new HttpError(401, header ? 'the Authorization header must be "Bearer <token>"' : 'a bearer token is required (Authorization: Bearer <token>)', {'WWW-Authenticate': 'Bearer realm="ml"'})
    }
    if (!timingSafeEqual(digest(match[1]!), token)) {
      return new HttpError(401, 'invalid bearer token', {'WWW-Authenticate': 'Bearer realm="ml", error="invalid_token"'})
    }
    return undefined
  }

  async function route(req: IncomingMessage, state: RequestState, path: string, queryText: string): Promise<Reply> {
    const query = () => new URLSearchParams(queryText)
    // Health checks stay open when auth is on: probes carry no tokens.
    if (path === '/healthz' || path === '/livez') {
      state.protocol = 'health'
      allow(req, path, 'GET')
      return {status: 200, body: {status: 'ok'}}
    }
    if (path === '/readyz') {
      state.protocol = 'health'
      allow(req, path, 'GET')
      if (draining) throw unavailable('not ready: shutting down')
      if (!repository.ready()) throw unavailable('not ready: a served model has no available version')
      return {status: 200, body: {status: 'ready'}}
    }
    if (path === '/v2/health/live' || path === '/v2/health/ready') {
      state.protocol = 'health'
      allow(req, path, 'GET')
      // KServe: the status code is the answer and the body is empty.
      return {status: path.endsWith('live') || (!draining && repository.ready()) ? 200 : 400}
    }
    const kserveMatch = KSERVE_MODEL.exec(path)
    if (kserveMatch !== null && kserveMatch[3] === 'ready') {
      state.protocol = 'health'
      allow(req, path, 'GET')
      if (draining) return {status: 400}
      return kserve.modelReady(ctx, state, decodeSegment(kserveMatch[1])!, decodeSegment(kserveMatch[2]))
    }
    const denied = authorised(req)
    if (denied) {
      state.protocol = path.startsWith('/v2') ? 'kserve' : path.startsWith('/v1') ? 'tfserving' : 'other'
      throw denied
    }
    if (path === '/metrics') {
      state.protocol = 'metrics'
      allow(req, path, 'GET')
      return {status: 200, body: await metricsText(), contentType: metrics.registry.contentType}
    }
    if (path === '/v2' || path === '/v2/') {
      state.protocol = 'kserve'
      allow(req, path, 'GET')
      return kserve.serverMetadata(ctx)
    }
    if (path === '/v2/repository/index') {
      state.protocol = 'kserve'
      allow(req, path, 'POST')
      return kserve.repositoryIndex(ctx)
    }
    if (kserveMatch !== null) {
      state.protocol = 'kserve'
      const model = decodeSegment(kserveMatch[1])!
      const version = decodeSegment(kserveMatch[2])
      if (kserveMatch[3] === 'infer') {
        allow(req, path, 'POST')
        state.inference = true
        state.model = model
        const inferenceHeader = req.headers['inference-header-content-length']
        if (inferenceHeader === undefined) requireJson(req)
        else requireJsonOrBinary(req)
        return kserve.infer(ctx, state, model, version, await readBody(req, options.maxBodyBytes), Array.isArray(inferenceHeader) ? inferenceHeader.join(', ') : inferenceHeader)
      }
      allow(req, path, 'GET')
      return kserve.modelMetadata(ctx, state, model, version)
    }
    const tf = TF_MODEL.exec(path)
    if (tf !== null) {
      state.protocol = 'tfserving'
      const model = decodeSegment(tf[1])!
      const selector: VersionSelector = {version: decodeSegment(tf[2]), label: decodeSegment(tf[3])}
      if (tf[4] === 'metadata') {
        allow(req, path, 'GET')
        return tfserving.metadata(ctx, state, model, selector)
      }
      const verb = tf[5]
      if (verb === undefined) {
        allow(req, path, 'GET')
        return tfserving.status(ctx, state, model, selector)
      }
      if (verb !== 'predict' && verb !== 'classify') {
        if (verb === 'regress') throw new HttpError(400, `model "${model}" is a classifier: it has no regression signature; use :classify or :predict`)
        throw notFound(`unknown method :${verb}; use :predict or :classify`)
      }
      allow(req, path, 'POST')
      state.inference = true
      state.model = model
      if (verb === 'classify' && IMAGE_TYPES.test(mediaType(req))) {
        state.protocol = 'raw'
        return tfserving.classifyRaw(ctx, state, model, selector, await readBody(req, options.maxBodyBytes), query())
      }
      if (verb === 'classify' && mediaType(req) !== '' && !JSON_TYPES.test(mediaType(req))) {
        throw new HttpError(415, `Content-Type ${mediaType(req)} is not accepted by :classify; send application/json examples, or the image itself as image/*`)
      }
      requireJson(req)
      const body = await readBody(req, options.maxBodyBytes)
      return verb === 'predict' ? tfserving.predict(ctx, state, model, selector, body) : tfserving.classify(ctx, state, model, selector, body, query())
    }
    throw notFound(`no such endpoint: ${req.method} ${path}`)
  }

  function send(res: ServerResponse, reply: Reply, state: RequestState): void {
    if (res.headersSent || res.destroyed) return
    const headers: Record<string, string | number> = {...reply.headers}
    if (draining) headers.Connection = 'close'
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

  function sendError(res: ServerResponse, error: unknown, state: RequestState, path: string): void {
    let status = 500
    let message: string
    let headers: Record<string, string> = {}
    if (error instanceof HttpError) {
      status = error.status
      message = error.message
      headers = error.headers
    } else if (isUserError(error)) {
      status = 400
      message = error.message
    } else {
      message = `internal error: ${error instanceof Error ? error.message : String(error)}`
      log.event('error', 'request-failed', {path, model: state.model, reason: error instanceof Error ? error.stack : String(error)})
    }
    // A request the client abandoned has no one to answer.
    if (status === 499) return
    send(res, {status, body: {error: message}, headers}, state)
  }

  const idle = new EventEmitter()

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now()
    const state: RequestState = {protocol: 'other', deadline: started + options.requestTimeoutMs, cancel: {}, inference: false, leases: []}
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q < 0 ? url : url.slice(0, q)
    inFlight++
    handled++
    metrics.inFlight.inc()
    res.once('close', () => {
      inFlight--
      metrics.inFlight.dec()
      const finished = res.writableFinished
      if (!finished) state.cancel.cancel?.()
      for (const lease of state.leases) lease.release()
      const seconds = (performance.now() - started) / 1000
      const status = finished ? res.statusCode : 499
      const model = state.model ?? ''
      const version = state.version ?? ''
      metrics.requests.inc({model, version, protocol: state.protocol, status: String(status)})
      metrics.requestDuration.observe({model, version, protocol: state.protocol}, seconds)
      if (state.inference && model !== '') metrics.inferenceRequest(model, version, status < 400, seconds)
      if (accessLog.log.enabled) {
        accessLog.log.write({method: req.method, path, status, ms: Math.round(seconds * 1e6) / 1e3, model: state.model ?? null, version: state.version ?? null, bytes: state.bytes ?? 0, protocol: state.protocol})
      }
      if (inFlight === 0) idle.emit('idle')
    })
    // Past the shutdown delay, requests that reach the port are refused before they run, so that a load
    // balancer may safely send them to another server (see close()).
    const routed = refusing && !HEALTH_PATHS.has(path) ? Promise.reject(unavailable('the server is shutting down: send the request to another server')) : route(req, state, path, q < 0 ? '' : url.slice(q + 1))
    routed.then(
      (reply) => send(res, reply, state),
      (error: unknown) => sendError(res, error, state, path),
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
    await repository.stop()
    scheduler.close()
    await pool.close()
    await accessLog.close()
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw new UserError(`cannot listen on ${options.host}:${options.port}: ${code === 'EADDRINUSE' ? 'the port is in use' : code}`, {
        code: 'SERVE_LISTEN',
        exit: 'usage',
        suggestions: ['Pick another port with --port (env ML_PORT) or serve.port.'],
      })
    }
    throw error
  }
  const port = (server.address() as AddressInfo).port
  const scheme = tls ? 'https' : 'http'
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  const url = `${scheme}://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}`

  let shutdownStarted: number | undefined
  let endDelay: (() => void) | undefined
  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      draining = true
      const drainStarted = performance.now()
      events.emit('draining')
      log.event('info', 'draining', {inFlight, queued: scheduler.depth(), delayedMs: shutdownStarted === undefined ? 0 : Math.round(drainStarted - shutdownStarted)})
      // For a moment the port stays open and refuses new requests with 503 before running them: a load
      // balancer retries those elsewhere and marks this server down (nginx: proxy_next_upstream
      // http_503), so that no connection is still waiting in the listen queue when it closes (the
      // kernel resets those, and the balancer cannot tell whether such a request ran). Then the port
      // closes, but open connections stay a moment too: http.Server.close() would also close idle
      // keep-alive connections at once, under a request being written into one.
      refusing = true
      await delay(DRAIN_REFUSE_MS)
      const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => resolve()))
      const grace = new AbortController()
      await Promise.race([closed, delay(DRAIN_REFUSE_MS, undefined, {signal: grace.signal}).catch(() => undefined)])
      grace.abort()
      while (inFlight > 0) await once(idle, 'idle')
      server.closeIdleConnections()
      await scheduler.drain()
      await repository.stop()
      scheduler.close()
      await pool.close()
      server.closeAllConnections()
      await closed
      await accessLog.close()
      log.event('info', 'stopped', {drainMs: Math.round(performance.now() - drainStarted)})
      events.emit('closed')
    })()
    return closing
  }

  let shuttingDown: Promise<void> | undefined
  const shutdown = ({skipDelay = false} = {}) => {
    if (skipDelay) endDelay?.()
    shuttingDown ??= (async () => {
      // Not ready from now on, and answers close their connections (as during the drain), so that
      // keep-alive clients reconnect through the load balancer while new connections are still served.
      draining = true
      shutdownStarted = performance.now()
      if (!skipDelay && options.shutdownDelayMs > 0) {
        log.event('info', 'shutdown-delay', {delayMs: options.shutdownDelayMs})
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, options.shutdownDelayMs)
          endDelay = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        endDelay = undefined
      }
      await close()
    })()
    return shuttingDown
  }

  return {
    url,
    port,
    metrics,
    pool,
    scheduler,
    repository,
    events,
    ready: () => !draining && repository.ready(),
    inFlight: () => inFlight,
    handled: () => handled,
    close,
    shutdown,
  }
}
