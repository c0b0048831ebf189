// The gRPC port: KServe V2's GRPCInferenceService and TF Serving's PredictionService on their own
// listener (@grpc/grpc-js), sharing with HTTP the server's parts (batching scheduler, repository),
// auth (the bearer token in `authorization` metadata), admission, TLS, metrics (protocol="grpc") and
// access log; drained with HTTP (see Lifecycle): no new calls once the drain starts, calls in flight
// answered before the queue drains and the instances stop.
import {EventEmitter, once} from 'node:events'
import * as grpc from '@grpc/grpc-js'
import {UserError} from '../../errors.js'
import {servedLabels} from '../accounting.js'
import type {Admission} from '../admission.js'
import type {BearerAuth} from '../auth.js'
import type {RequestState, ServeContext} from '../context.js'
import type {JsonLog} from '../log.js'
import type {VersionSelector} from '../repository.js'
import * as kserve from './kserve.js'
import {services} from './protos.js'
import {Code, failureOf} from './status.js'
import * as tfserving from './tfserving.js'

export interface GrpcDeps {
  ctx: ServeContext
  auth?: BearerAuth
  admission: Admission
  log: JsonLog
  accessLog: JsonLog
  tls?: {cert: Buffer; key: Buffer}
}

export interface GrpcHandle {
  port: number
  /** Calls received and not yet answered. */
  inFlight(): number
  /** Calls received since start. */
  handled(): number
  /**
   * Sends GOAWAY on every open connection while the port keeps serving (the shutdown delay): clients
   * finish their calls there and open a new connection, which the load balancer sends elsewhere once
   * this server's endpoint is gone. An HTTP/2 connection otherwise lives until the port closes.
   */
  goAway(): void
  /** Stops taking calls (GOAWAY) and resolves once the calls in flight are answered. */
  close(): Promise<void>
}

interface Call<Request> {
  state: RequestState
  request: Request
  /** Admission for an inference call: `bytes` of images it carries, for this model version. */
  admit(bytes: number, model: string, selector: VersionSelector): void
}

interface Method<Request> {
  /**
   * Reachable without a token when auth is on: liveness and readiness, counted as protocol "health" as
   * over HTTP (the SLO checks of `ml monitor` leave health checks out); every other call is "grpc".
   */
  open?: boolean
  handle(call: Call<Request>): unknown
}

const SERVICE_PATHS = {kserve: '/inference.GRPCInferenceService/', tfserving: '/tensorflow.serving.PredictionService/'}

function kserveMethods(ctx: ServeContext): Record<string, Method<never>> {
  return {
    ServerLive: {open: true, handle: () => kserve.serverLive()},
    ServerReady: {open: true, handle: () => kserve.serverReady(ctx)},
    ModelReady: {open: true, handle: ({state, request}) => kserve.modelReadyCall(ctx, state, request)},
    ServerMetadata: {handle: () => kserve.serverMetadataCall(ctx)},
    ModelMetadata: {handle: ({state, request}) => kserve.modelMetadataCall(ctx, state, request)},
    RepositoryIndex: {handle: ({request}) => kserve.repositoryIndexCall(ctx, request)},
    ModelInfer: {
      handle: ({state, request, admit}: Call<kserve.ModelInferRequest>) => {
        admit(kserve.requestBytes(request), request.model_name, {version: request.model_version || undefined})
        return kserve.modelInfer(ctx, state, request)
      },
    },
  }
}

function tfservingMethods(ctx: ServeContext): Record<string, Method<never>> {
  const target = (spec: tfserving.ModelSpec | null | undefined): {model: string; selector: VersionSelector} => ({
    model: spec?.name ?? '',
    selector: spec?.version_choice === 'version_label' ? {label: spec.version_label} : spec?.version_choice === 'version' && spec.version ? {version: String(spec.version.value)} : {},
  })
  return {
    Predict: {
      handle: ({state, request, admit}: Call<tfserving.PredictRequest>) => {
        const {model, selector} = target(request.model_spec)
        admit(tfserving.predictBytes(request), model, selector)
        return tfserving.predict(ctx, state, request)
      },
    },
    Classify: {
      handle: ({state, request, admit}: Call<tfserving.ClassificationRequest>) => {
        const {model, selector} = target(request.model_spec)
        const examples = request.input?.example_list?.examples ?? []
        admit(examples.reduce((sum, e) => sum + Object.values(e.features?.feature ?? {}).reduce((s, f) => s + (f.bytes_list?.value ?? []).reduce((b, v) => b + v.length, 0), 0), 0), model, selector)
        return tfserving.classify(ctx, state, request)
      },
    },
    GetModelMetadata: {handle: ({state, request}) => tfserving.getModelMetadata(ctx, state, request)},
  }
}

function listenError(error: Error, host: string, port: number): UserError {
  return new UserError(`cannot listen for gRPC on ${host}:${port}: ${/EADDRINUSE|address already in use/i.test(error.message) ? 'the port is in use' : error.message}`, {
    code: 'SERVE_LISTEN',
    exit: 'usage',
    suggestions: ['Pick another port with --grpc-port (env ML_GRPC_PORT) or serve.grpc.port.'],
  })
}

/** Binds the gRPC port (serve.grpc.port on serve.host) and starts answering. */
export async function startGrpc(deps: GrpcDeps): Promise<GrpcHandle> {
  const {ctx, auth, admission, log, accessLog} = deps
  const {options, metrics} = ctx
  const port = options.grpc!.port
  let inFlight = 0
  let handled = 0
  const idle = new EventEmitter()

  function wrap(service: keyof typeof SERVICE_PATHS, name: string, method: Method<never>): grpc.handleUnaryCall<unknown, unknown> {
    const path = SERVICE_PATHS[service] + name
    return (call, callback) => {
      const started = performance.now()
      const callDeadline = call.getDeadline()
      const deadlineMs = callDeadline instanceof Date ? callDeadline.getTime() : callDeadline
      // The call's own deadline, when sooner than serve.requestTimeoutMs.
      const deadline = Math.min(started + options.requestTimeoutMs, Number.isFinite(deadlineMs) ? started + (deadlineMs - Date.now()) : Number.POSITIVE_INFINITY)
      const state: RequestState = {protocol: method.open ? 'health' : 'grpc', deadline, cancel: {}, inference: false, leases: []}
      inFlight++
      handled++
      metrics?.inFlight.inc()
      let answered = false
      const finish = (httpStatus: number, code: Code, error?: {message: string}, response?: unknown) => {
        if (answered) return
        answered = true
        for (const lease of state.leases) lease.release()
        state.admission?.release()
        if (code === Code.CANCELLED) state.cancel.cancel?.()
        else if (error) callback({code, details: error.message})
        else callback(null, response)
        const seconds = (performance.now() - started) / 1000
        const labels = servedLabels(ctx.repository, state.model, state.version)
        if (metrics) {
          metrics.inFlight.dec()
          if (code === Code.CANCELLED) metrics.clientAborts.inc({protocol: state.protocol})
          metrics.requests.inc({...labels, protocol: state.protocol, status: String(httpStatus)})
          metrics.requestDuration.observe({...labels, protocol: state.protocol}, seconds)
          if (state.inference && labels.model !== '') metrics.inferenceRequest(labels.model, labels.version, httpStatus < 400, seconds)
        }
        if (accessLog.enabled) {
          accessLog.write({method: 'POST', path, status: httpStatus, grpcStatus: Code[code], ms: Math.round(seconds * 1e6) / 1e3, model: state.model ?? null, version: state.version ?? null, bytes: 0, protocol: state.protocol})
        }
        if (--inFlight === 0) idle.emit('idle')
      }
      call.once('cancelled', () => finish(499, Code.CANCELLED))
      const denied = auth?.checkHeader(call.metadata.get('authorization').map(String)[0])
      const run = async () => {
        if (!method.open && denied) throw denied
        return method.handle({
          state,
          // Each method's handler declares the request message it is registered for.
          request: call.request as never,
          admit: (bytes, model, selector) => admission.admitBytes(bytes, state, model, selector),
        })
      }
      run().then(
        (response) => finish(200, Code.OK, undefined, response),
        (error: unknown) => {
          const failure = failureOf(error)
          // Anonymous callers of the open methods (auth on) get the code alone: messages name served models.
          if (denied && method.open) failure.message = `${Code[failure.code]} (send the bearer token for details)`
          if (failure.internal) log.event('error', 'request-failed', {path, model: state.model, reason: error instanceof Error ? error.stack : String(error)})
          finish(failure.httpStatus, failure.code, failure)
        },
      )
    }
  }

  const implementation = <M extends Record<string, Method<never>>>(service: keyof typeof SERVICE_PATHS, methods: M): grpc.UntypedServiceImplementation =>
    Object.fromEntries(Object.entries(methods).map(([name, method]) => [name, wrap(service, name, method)]))

  const server = new grpc.Server({
    'grpc.max_receive_message_length': options.maxBodyBytes,
    'grpc.max_send_message_length': -1,
  })
  const defs = services()
  server.addService(defs.kserve, implementation('kserve', kserveMethods(ctx)))
  server.addService(defs.tfserving, implementation('tfserving', tfservingMethods(ctx)))
  const credentials = deps.tls ? grpc.ServerCredentials.createSsl(null, [{private_key: deps.tls.key, cert_chain: deps.tls.cert}], false) : grpc.ServerCredentials.createInsecure()
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, credentials, (error, actual) => (error ? reject(listenError(error, options.host, port)) : resolve(actual)))
  })
  let closing: Promise<void> | undefined
  return {
    port: bound,
    inFlight: () => inFlight,
    handled: () => handled,
    goAway() {
      // Calls under way on those connections keep their time; whatever is left when the port closes
      // is tryShutdown's (below).
      server.drain(`${host}:${bound}`, options.shutdownDelayMs + options.requestTimeoutMs)
    },
    close() {
      closing ??= (async () => {
        // tryShutdown: no new calls (GOAWAY to every client), then waits for the calls in flight. A call
        // that never ends (its client stalled) is cut after the request timeout.
        const shutdown = new Promise<void>((resolve) => server.tryShutdown(() => resolve()))
        const force = setTimeout(() => server.forceShutdown(), options.requestTimeoutMs + 1_000)
        await shutdown
        clearTimeout(force)
        while (inFlight > 0) await once(idle, 'idle')
      })()
      return closing
    },
  }
}
