// Request accounting: what each request counts for once its response has closed (the requests,
// latency and Triton metrics, one access-log line, client aborts) and how many are in flight, which
// the drain awaits. Metric labels name served models only: a made-up name counts as `_unknown`, so
// that no request can add series to /metrics.
import {EventEmitter, once} from 'node:events'
import type {IncomingMessage, ServerResponse} from 'node:http'
import type {RequestState} from './context.js'
import type {JsonLog} from './log.js'
import type {ServeMetrics} from './metrics.js'
import type {ModelRepository} from './repository.js'

/** The label value of every model or version that is not served. */
export const UNKNOWN_LABEL = '_unknown'

/** Metric labels for a request's model and version: served ones by name, '' for none, else `_unknown`. */
export function servedLabels(repository: Pick<ModelRepository, 'models'>, model: string | undefined, version: string | undefined): {model: string; version: string} {
  if (model === undefined) return {model: '', version: ''}
  const entry = repository.models.get(model)
  if (entry === undefined) return {model: UNKNOWN_LABEL, version: version === undefined ? '' : UNKNOWN_LABEL}
  if (version === undefined) return {model, version: ''}
  return {model, version: /^[1-9][0-9]{0,15}$/.test(version) && entry.versions.has(Number(version)) ? version : UNKNOWN_LABEL}
}

/** Milliseconds to the microsecond. */
const micros = (ms: number) => Math.round(ms * 1e3) / 1e3

export class RequestAccounting {
  private inFlightCount = 0
  private handledCount = 0
  private readonly idleEvents = new EventEmitter()

  constructor(
    private readonly metrics: ServeMetrics,
    private readonly accessLog: JsonLog,
    private readonly repository: Pick<ModelRepository, 'models'>,
    private readonly log: JsonLog,
  ) {}

  /** Requests received and not yet answered. */
  get inFlight(): number {
    return this.inFlightCount
  }

  /** Requests received since start. */
  get handled(): number {
    return this.handledCount
  }

  /** Counts a request from now until its response closes; `state` is read then, complete. */
  begin(req: IncomingMessage, res: ServerResponse, path: string, state: RequestState, started: number): void {
    this.inFlightCount++
    this.handledCount++
    this.metrics.inFlight.inc()
    res.once('close', () => this.end(req, res, path, state, started))
  }

  private end(req: IncomingMessage, res: ServerResponse, path: string, state: RequestState, started: number): void {
    this.inFlightCount--
    this.metrics.inFlight.dec()
    const seconds = (performance.now() - started) / 1000
    const status = res.writableFinished ? res.statusCode : 499
    const {model, version} = servedLabels(this.repository, state.model, state.version)
    if (status === 499) {
      // The client went away before its answer: its business, not a server failure.
      this.metrics.clientAborts.inc({protocol: state.protocol})
      this.log.event('info', 'client-aborted', {path: path.slice(0, 256), protocol: state.protocol, model: model || undefined, ms: Math.round(seconds * 1e3)})
    }
    this.metrics.requests.inc({model, version, protocol: state.protocol, status: String(status)})
    this.metrics.requestDuration.observe({model, version, protocol: state.protocol}, seconds)
    if (state.inference && model !== '') this.metrics.inferenceRequest(model, version, status < 400, seconds)
    if (this.accessLog.enabled) {
      const timing = state.timing === undefined ? undefined : {queueMs: micros(state.timing.queueMs), computeMs: micros(state.timing.computeMs), batch: state.timing.batch}
      this.accessLog.write({method: req.method, path, status, ms: micros(seconds * 1e3), model: state.model ?? null, version: state.version ?? null, bytes: state.bytes ?? 0, protocol: state.protocol, ...timing})
    }
    if (this.inFlightCount === 0) this.idleEvents.emit('idle')
  }

  /** Resolves once no request is in flight. */
  async idle(): Promise<void> {
    while (this.inFlightCount > 0) await once(this.idleEvents, 'idle')
  }
}
