// What protocol handlers share: the server's parts, the per-request state the access log and metrics
// read (protocol, model, version), and the one way to run a model version on queued input.
import type {IncomingHttpHeaders} from 'node:http'
import type {ServingEngine} from '../engine/inference.js'
import type {ServeMetrics} from './metrics.js'
import type {ServeOptions} from './options.js'
import type {Lease, ModelRepository, ModelVersion, VersionSelector} from './repository.js'
import type {CancelToken, Scheduler} from './scheduler.js'

export type Protocol = 'kserve' | 'tfserving' | 'raw' | 'health' | 'metrics' | 'grpc' | 'other'

export interface ServeContext {
  options: ServeOptions
  repository: ModelRepository
  scheduler: Scheduler
  /** Server name and version for KServe server metadata, and the inference engine it runs. */
  server: {name: string; version: string; engine?: ServingEngine}
  /** Drift metrics (predicted classes, input statistics); absent in handler tests. */
  metrics?: ServeMetrics
  /** True from a shutdown signal on: readiness answers no. */
  draining(): boolean
  /** What GET /metrics answers, and its content type. */
  metricsText(): Promise<string>
  metricsContentType: string
}

/** A request's hold on admission (serve/admission.ts), released once its work is queued or it has ended. */
export interface Ticket {
  release(): void
}

export interface RequestState {
  protocol: Protocol
  model?: string
  version?: string
  /** performance.now() time at which the request is answered 504. */
  deadline: number
  /** Called by the server when the client goes away, so that its queued work is dropped. */
  cancel: CancelToken
  /** True for requests that run a model (counted by the nv_inference_* metrics). */
  inference: boolean
  leases: Lease[]
  /** The request's hold on admission (inference requests), released once its work is queued. */
  admission?: Ticket
  /** Response body bytes, for the access log. */
  bytes?: number
  /** Where an inference request's time went (access log): queued, computing, and the batch it ran in. */
  timing?: {queueMs: number; computeMs: number; batch: number}
  /** The request's headers (a canary split's sticky header is read from them). */
  headers?: IncomingHttpHeaders
  /** The version a canary split chose for this request, once chosen (admission and handler agree). */
  routed?: {model: string; version?: number; role?: 'stable' | 'canary'}
}

export interface Reply {
  status: number
  /** A JSON value, or a string or Buffer sent as is (then contentType says what it is). */
  body?: unknown
  contentType?: string
  headers?: Record<string, string>
}

export const json = (body: unknown, status = 200): Reply => ({status, body})

/**
 * The selector a request resolves to: as sent when it names a version or label, else the version the
 * model's canary split (if any) chooses, once per request.
 */
export function routedSelector(ctx: Pick<ServeContext, 'repository'>, state: RequestState, model: string, selector: VersionSelector): VersionSelector {
  if (selector.version !== undefined || selector.label !== undefined) return selector
  if (state.routed?.model !== model) {
    const header = ctx.repository.stickyHeader(model)
    const value = header === undefined ? undefined : state.headers?.[header.toLowerCase()]
    const key = Array.isArray(value) ? value[0] : value
    const chosen = ctx.repository.route(model, state.inference, key === '' ? undefined : key)
    state.routed = {model, ...chosen}
    // Counted against the chosen version even when it is refused before a handler runs (503 at admission).
    if (chosen !== undefined) {
      state.model = model
      state.version = String(chosen.version)
    }
  }
  return state.routed.version === undefined ? selector : {version: String(state.routed.version)}
}

/** Takes a version for the rest of the request (released by the server when it has answered). */
export function useVersion(ctx: ServeContext, state: RequestState, model: string, selector: VersionSelector): ModelVersion {
  state.model = model
  const lease = ctx.repository.acquire(model, routedSelector(ctx, state, model, selector))
  state.leases.push(lease)
  state.version = String(lease.version.version)
  return lease.version
}

/** Queues `n` images for the version; resolves with n * numClasses probabilities. */
export async function runModel(ctx: ServeContext, state: RequestState, version: ModelVersion, input: Float32Array, n: number): Promise<Float32Array> {
  state.inference = true
  state.admission?.release()
  const outcome = await ctx.scheduler.submit(version.key, input, n, state.deadline, state.cancel)
  state.timing = {queueMs: outcome.queueMs, computeMs: outcome.computeMs, batch: outcome.batchSize}
  ctx.metrics?.predicted(version.model, String(version.version), version.labels, outcome.output, n)
  return outcome.output
}
