// The server's life after startup: readiness, the shutdown delay, and the drain (stop listening,
// answer what is queued and in flight, stop the parts). The parts' teardown is written once, here.
import {EventEmitter} from 'node:events'
import type {Server} from 'node:http'
import net from 'node:net'
import {setTimeout as delay} from 'node:timers/promises'
import type {RequestAccounting} from './accounting.js'
import type {AccessLogTarget, JsonLog} from './log.js'
import type {InstancePool} from './pool.js'
import type {ModelRepository} from './repository.js'
import type {Scheduler} from './scheduler.js'

/** What a server runs besides its HTTP listener. */
export interface ServerParts {
  repository: ModelRepository
  scheduler: Scheduler
  pool: InstancePool
  accessLog: AccessLogTarget
}

/** Stops every part: on a failed start as on the last step of a drain. */
export async function stopParts(parts: ServerParts): Promise<void> {
  await parts.repository.stop()
  parts.scheduler.close()
  await parts.pool.close()
  await parts.accessLog.close()
}

/**
 * How long a draining server refuses new requests (503) before it closes its port, and then how long
 * it keeps idle connections open for requests already on their way.
 */
const DRAIN_REFUSE_MS = 500

/** Another listener drained with the HTTP port (the gRPC port): it stops taking calls and finishes its own. */
export interface DrainedListener {
  /** At the start of the shutdown delay: asks clients on long-lived connections to reconnect. */
  goAway?(): void
  close(): Promise<void>
}

export class Lifecycle {
  /** Server events: 'draining', 'closed'. */
  readonly events = new EventEmitter()
  /** Closed from the start of the drain, and awaited before the queue drains and the parts stop. */
  readonly listeners: DrainedListener[] = []
  private isDraining = false
  private isRefusing = false
  private shutdownStarted: number | undefined
  private endDelay: (() => void) | undefined
  private closing: Promise<void> | undefined
  private shuttingDown: Promise<void> | undefined

  constructor(
    private readonly server: Server,
    private readonly parts: ServerParts,
    private readonly accounting: RequestAccounting,
    private readonly log: JsonLog,
    private readonly shutdownDelayMs: number,
  ) {}

  /** True from the shutdown signal (or close()) on: readiness says no, answers close their connections. */
  get draining(): boolean {
    return this.isDraining
  }

  /** True for a moment before the port closes: requests other than health checks get 503 before they run. */
  get refusing(): boolean {
    return this.isRefusing
  }

  ready(): boolean {
    return !this.isDraining && this.parts.repository.ready()
  }

  /** Readiness turns false, listening stops, queued and in-flight requests finish, the parts stop. */
  close(): Promise<void> {
    this.closing ??= this.drain()
    return this.closing
  }

  private async drain(): Promise<void> {
    const {server, parts, accounting, log} = this
    this.isDraining = true
    const drainStarted = performance.now()
    this.events.emit('draining')
    log.event('info', 'draining', {inFlight: accounting.inFlight, queued: parts.scheduler.depth(), delayedMs: this.shutdownStarted === undefined ? 0 : Math.round(drainStarted - this.shutdownStarted)})
    // For a moment the port stays open and refuses new requests with 503 before running them: a load
    // balancer retries those elsewhere and marks this server down (nginx: proxy_next_upstream
    // http_503), so that no connection is still waiting in the listen queue when it closes (the
    // kernel resets those, and the balancer cannot tell whether such a request ran). Then the port
    // closes, but open connections stay a moment too: http.Server.close() would also close idle
    // keep-alive connections at once, under a request being written into one.
    this.isRefusing = true
    const listenersClosed = Promise.all(this.listeners.map((listener) => listener.close()))
    await delay(DRAIN_REFUSE_MS)
    const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => resolve()))
    const grace = new AbortController()
    await Promise.race([closed, delay(DRAIN_REFUSE_MS, undefined, {signal: grace.signal}).catch(() => undefined)])
    grace.abort()
    await accounting.idle()
    await listenersClosed
    server.closeIdleConnections()
    await parts.scheduler.drain()
    server.closeAllConnections()
    await closed
    await stopParts(parts)
    log.event('info', 'stopped', {drainMs: Math.round(performance.now() - drainStarted)})
    this.events.emit('closed')
  }

  /**
   * Readiness turns false at once while the port keeps serving for the shutdown delay, then close().
   * skipDelay ends a delay under way, or skips it, so the drain starts now.
   */
  shutdown({skipDelay = false} = {}): Promise<void> {
    if (skipDelay) this.endDelay?.()
    this.shuttingDown ??= (async () => {
      // Not ready from now on, and answers close their connections (as during the drain), so that
      // keep-alive clients reconnect through the load balancer while new connections are still served.
      this.isDraining = true
      this.shutdownStarted = performance.now()
      if (!skipDelay && this.shutdownDelayMs > 0) {
        this.log.event('info', 'shutdown-delay', {delayMs: this.shutdownDelayMs})
        for (const listener of this.listeners) listener.goAway?.()
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.shutdownDelayMs)
          this.endDelay = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        this.endDelay = undefined
      }
      await this.close()
    })()
    return this.shuttingDown
  }
}
