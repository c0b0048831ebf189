// Admission: whether an inference request is taken, decided from its headers before its body is read,
// parsed or decoded, so that shedding load costs little and the requests taken are served in time.
import type {IncomingMessage} from 'node:http'
import type {RequestState} from './context.js'
import {unavailable} from './http-error.js'
import type {ModelRepository, VersionSelector} from './repository.js'
import type {Scheduler} from './scheduler.js'

export interface AdmissionLimits {
  /** Images queued per model version, counting requests admitted and not yet queued as one each. */
  maxQueueSize: number
  /** Bytes of bodies admitted and not yet queued. */
  maxInFlightBytes: number
  maxBodyBytes: number
}

export class Admission {
  /** Requests admitted and not yet queued, per model version key. */
  private readonly pending = new Map<string, number>()
  private bytes = 0

  constructor(
    private readonly repository: ModelRepository,
    private readonly scheduler: Scheduler,
    private readonly limits: AdmissionLimits,
  ) {}

  /** Bytes of admitted bodies being read, parsed or decoded. */
  get inFlightBytes(): number {
    return this.bytes
  }

  /**
   * Takes the request or throws 503 with Retry-After. A request for a model or version that cannot be
   * served is let through: its handler answers it, and its body still counts against the byte budget.
   */
  admit(req: IncomingMessage, state: RequestState, model: string, selector: VersionSelector): void {
    const declared = Number(req.headers['content-length'])
    // A chunked body may be as large as the limit allows.
    this.admitBytes(Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, this.limits.maxBodyBytes) : this.limits.maxBodyBytes, state, model, selector)
  }

  /** admit() for a request of `size` bytes already received (a gRPC message). */
  admitBytes(size: number, state: RequestState, model: string, selector: VersionSelector): void {
    // Refusing a large body before reading it is cheaper with the connection closed than with the body read to discard.
    const shed = (message: string) => {
      const error = unavailable(message)
      if (size > 64 * 1024) error.headers.Connection = 'close'
      return error
    }
    let key: string | undefined
    try {
      const version = this.repository.find(model, selector)
      key = version.key
      const waiting = this.scheduler.depth(key) + (this.pending.get(key) ?? 0)
      if (waiting >= this.limits.maxQueueSize) {
        throw shed(`the queue of ${version.model} version ${version.version} is full (${this.limits.maxQueueSize} images); retry later`)
      }
    } catch (error) {
      if ((error as {status?: number}).status === 503) throw error
      key = undefined
    }
    // One request is always let in, whatever its size: maxBodyBytes bounds it.
    if (this.bytes > 0 && this.bytes + size > this.limits.maxInFlightBytes) {
      throw shed(`the server is reading or decoding ${this.bytes} bytes of requests, near serve.maxInFlightBytes (${this.limits.maxInFlightBytes}); retry later`)
    }
    this.bytes += size
    if (key !== undefined) this.pending.set(key, (this.pending.get(key) ?? 0) + 1)
    let held = true
    state.admission = {
      release: () => {
        if (!held) return
        held = false
        this.bytes -= size
        if (key === undefined) return
        const left = this.pending.get(key)! - 1
        if (left === 0) this.pending.delete(key)
        else this.pending.set(key, left)
      },
    }
  }
}
