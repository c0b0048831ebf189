// Request accounting: what each request counts for once its response has closed (the requests,
// latency and Triton metrics, one access-log line) and how many are in flight, which the drain awaits.
import {EventEmitter, once} from 'node:events'
import type {IncomingMessage, ServerResponse} from 'node:http'
import type {RequestState} from './context.js'
import type {JsonLog} from './log.js'
import type {ServeMetrics} from './metrics.js'

export class RequestAccounting {
  private inFlightCount = 0
  private handledCount = 0
  private readonly idleEvents = new EventEmitter()

  constructor(
    private readonly metrics: ServeMetrics,
    private readonly accessLog: JsonLog,
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
    const model = state.model ?? ''
    const version = state.version ?? ''
    this.metrics.requests.inc({model, version, protocol: state.protocol, status: String(status)})
    this.metrics.requestDuration.observe({model, version, protocol: state.protocol}, seconds)
    if (state.inference && model !== '') this.metrics.inferenceRequest(model, version, status < 400, seconds)
    if (this.accessLog.enabled) {
      this.accessLog.write({method: req.method, path, status, ms: Math.round(seconds * 1e6) / 1e3, model: state.model ?? null, version: state.version ?? null, bytes: state.bytes ?? 0, protocol: state.protocol})
    }
    if (this.inFlightCount === 0) this.idleEvents.emit('idle')
  }

  /** Resolves once no request is in flight. */
  async idle(): Promise<void> {
    while (this.inFlightCount > 0) await once(this.idleEvents, 'idle')
  }
}
