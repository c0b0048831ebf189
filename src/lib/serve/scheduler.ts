// Dynamic batching: FIFO queues per model version grouped into batches for free instances, bounded
// (503) and with deadlines (504); an idle server dispatches at once, so light load means small batches.
import {EventEmitter} from 'node:events'
import {giveFloats} from './floats.js'
import {HttpError, unavailable} from './http-error.js'
import type {ServeMetrics} from './metrics.js'
import type {Instances} from './pool.js'

export interface SchedulerOptions {
  maxBatchSize: number
  /** While some instance is busy, a free one waits for this many queued images... */
  preferredBatchSize: number
  /** ...but no longer than this after the oldest request arrived. */
  maxQueueDelayMs: number
  /** Images per queue; beyond it requests are refused with 503. */
  maxQueueSize: number
}

export interface QueueInfo {
  key: string
  model: string
  version: string
  /** Floats per image out (the instance sizes the input from the loaded version). */
  outputSize: number
}

/** Lets the caller drop its request: cancel() is set by submit() while the request is queued. */
export interface CancelToken {
  cancel?: () => void
}

export interface InferOutcome {
  /** n * outputSize floats (a view into the batch's output). */
  output: Float32Array
  queueMs: number
  computeMs: number
  /** Images in the batch this request ran in. */
  batchSize: number
}

type ItemState = 'queued' | 'running' | 'settled'

interface Item {
  input: Float32Array
  n: number
  enqueuedAt: number
  deadline: number
  state: ItemState
  resolve: (outcome: InferOutcome) => void
  reject: (error: Error) => void
  token?: CancelToken
}

const EMPTY = new Float32Array(0)

class Queue {
  private items: Item[] = []
  private head = 0
  /** Images queued (settled items excluded). */
  size = 0
  /** Batches running. */
  running = 0
  removed = false
  readonly depth: {set(value: number): void} | undefined

  constructor(
    readonly info: QueueInfo,
    metrics: ServeMetrics | undefined,
  ) {
    this.depth = metrics?.queueDepth.labels({model: info.model, version: info.version})
  }

  push(item: Item): void {
    this.items.push(item)
  }

  /** The oldest item still queued; settled ones (expired, cancelled) are dropped on the way. */
  peek(): Item | undefined {
    while (this.head < this.items.length && this.items[this.head]!.state !== 'queued') this.head++
    if (this.head >= this.items.length) {
      this.items = []
      this.head = 0
      return undefined
    }
    // Compact now and then rather than shift() on every take.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return this.items[this.head]
  }

  take(): Item {
    return this.items[this.head++]!
  }

  get idle(): boolean {
    return this.size === 0 && this.running === 0
  }
}

export class Scheduler extends EventEmitter {
  private readonly queues = new Map<string, Queue>()
  private timer: NodeJS.Timeout | undefined
  private timerAt = Number.POSITIVE_INFINITY
  private pumping = false
  private repump = false
  private paused = false
  private drainWaiters: Array<() => void> = []

  constructor(
    private readonly instances: Instances,
    private readonly options: SchedulerOptions,
    private readonly metrics?: ServeMetrics,
  ) {
    super()
    instances.onIdle(() => this.pump())
  }

  addModel(info: QueueInfo): void {
    if (!this.queues.has(info.key)) this.queues.set(info.key, new Queue(info, this.metrics))
  }

  /** Stops taking requests for a model version and resolves once its queue and batches are done. */
  async removeModel(key: string): Promise<void> {
    const queue = this.queues.get(key)
    if (queue === undefined) return
    queue.removed = true
    while (!queue.idle) await new Promise<void>((resolve) => this.drainWaiters.push(resolve))
    this.queues.delete(key)
  }

  /** Resolves when every queue is empty and no batch is running. */
  async drain(): Promise<void> {
    while ([...this.queues.values()].some((q) => !q.idle)) await new Promise<void>((resolve) => this.drainWaiters.push(resolve))
  }

  /** Images waiting for a model version (all versions when no key). */
  depth(key?: string): number {
    if (key !== undefined) return this.queues.get(key)?.size ?? 0
    let n = 0
    for (const q of this.queues.values()) n += q.size
    return n
  }

  /** Holds every queue (tests: fill a queue deterministically). Deadlines still apply. */
  pause(): void {
    this.paused = true
  }

  resume(): void {
    this.paused = false
    this.pump()
  }

  /**
   * Queues `n` images (all of their input floats) for a model version. Rejects with an HttpError: 503 when
   * the queue is full or the version is going away, 504 when `deadline` (performance.now() time)
   * passes first, 500 when the instance fails.
   */
  submit(key: string, input: Float32Array, n: number, deadline: number, token?: CancelToken): Promise<InferOutcome> {
    const queue = this.queues.get(key)
    if (queue === undefined || queue.removed) return Promise.reject(unavailable(`model ${key.replace('/', ' version ')} is not loaded`))
    if (n > this.options.maxBatchSize) {
      return Promise.reject(new HttpError(400, `${n} images in one request is over serve.maxBatchSize (${this.options.maxBatchSize})`))
    }
    if (queue.size + n > this.options.maxQueueSize) {
      return Promise.reject(unavailable(`the queue of ${queue.info.model} version ${queue.info.version} is full (${this.options.maxQueueSize} images); retry later`))
    }
    return new Promise<InferOutcome>((resolve, reject) => {
      const item: Item = {input, n, enqueuedAt: performance.now(), deadline, state: 'queued', resolve, reject, token}
      if (token !== undefined) token.cancel = () => this.cancel(queue, item)
      queue.push(item)
      queue.size += n
      queue.depth?.set(queue.size)
      if (this.listenerCount('enqueued') > 0) this.emit('enqueued', key, queue.size)
      this.pump()
    })
  }

  private settle(item: Item): void {
    item.state = 'settled'
    // Queued work dropped (expired, cancelled): its floats go back for reuse.
    if (item.input !== EMPTY) giveFloats(item.input)
    item.input = EMPTY
    if (item.token !== undefined) item.token.cancel = undefined
  }

  /** A client that went away: its queued images are dropped before they reach an instance. */
  private cancel(queue: Queue, item: Item): void {
    if (item.state !== 'queued') return
    this.settle(item)
    queue.size -= item.n
    queue.depth?.set(queue.size)
    item.reject(new HttpError(499, 'the client closed the connection'))
    if (this.listenerCount('cancelled') > 0) this.emit('cancelled', queue.info.key, queue.size)
    this.checkDrained()
  }

  private expire(queue: Queue, now: number): void {
    for (let item = queue.peek(); item !== undefined && item.deadline <= now; item = queue.peek()) {
      queue.take()
      this.settle(item)
      queue.size -= item.n
      item.reject(new HttpError(504, `no instance could take the request within serve.requestTimeoutMs; it waited ${Math.round(now - item.enqueuedAt)} ms in the queue`))
    }
    queue.depth?.set(queue.size)
  }

  private pump(): void {
    if (this.pumping) {
      this.repump = true
      return
    }
    this.pumping = true
    try {
      do {
        this.repump = false
        this.pumpOnce()
      } while (this.repump)
    } finally {
      this.pumping = false
    }
    this.checkDrained()
  }

  private pumpOnce(): void {
    const now = performance.now()
    let wakeAt = Number.POSITIVE_INFINITY
    for (const queue of this.queues.values()) this.expire(queue, now)
    const {preferredBatchSize, maxQueueDelayMs} = this.options
    while (!this.paused && this.instances.idleCount() > 0) {
      // Wait to fill a batch only while another instance is busy: an idle server answers at once.
      const othersBusy = maxQueueDelayMs > 0 && this.instances.busyCount() > 0
      let best: Queue | undefined
      let bestAt = Number.POSITIVE_INFINITY
      for (const queue of this.queues.values()) {
        const head = queue.peek()
        if (head === undefined) continue
        if (othersBusy && queue.size < preferredBatchSize && head.enqueuedAt + maxQueueDelayMs > now) {
          wakeAt = Math.min(wakeAt, head.enqueuedAt + maxQueueDelayMs)
          continue
        }
        if (head.enqueuedAt < bestAt) {
          best = queue
          bestAt = head.enqueuedAt
        }
      }
      if (best === undefined) break
      this.dispatch(best, now)
    }
    for (const queue of this.queues.values()) {
      const head = queue.peek()
      if (head !== undefined) wakeAt = Math.min(wakeAt, head.deadline)
    }
    if (wakeAt < Number.POSITIVE_INFINITY) this.arm(wakeAt, now)
  }

  private arm(at: number, now: number): void {
    if (at >= this.timerAt) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.timerAt = Number.POSITIVE_INFINITY
      this.pump()
    }, Math.max(0, Math.ceil(at - now)))
  }

  private dispatch(queue: Queue, now: number): void {
    const {info} = queue
    const batch: Item[] = []
    let n = 0
    for (let item = queue.peek(); item !== undefined && (batch.length === 0 || n + item.n <= this.options.maxBatchSize); item = queue.peek()) {
      queue.take()
      item.state = 'running'
      batch.push(item)
      n += item.n
      this.metrics?.queued(info.model, info.version, (now - item.enqueuedAt) / 1000)
    }
    queue.size -= n
    queue.depth?.set(queue.size)
    queue.running++
    // The instance copies the parts into its batch buffer: no batch-sized array per dispatch.
    const parts = batch.map((item) => item.input)
    for (const item of batch) item.input = EMPTY
    // A batch that outlives every deadline in it still answers its requests (504) on time.
    const deadline = Math.min(...batch.map((item) => item.deadline))
    const watchdog = setTimeout(() => {
      for (const item of batch) {
        if (item.state !== 'running') continue
        this.settle(item)
        item.reject(new HttpError(504, 'the model did not answer within serve.requestTimeoutMs'))
      }
    }, Math.max(0, Math.ceil(deadline - now)))
    const running = this.instances.run(info.key, parts, n)
    // Copied into the instance's batch buffer by now (run reads its parts before it returns).
    for (const part of parts) giveFloats(part)
    running.then(
      ({output, computeMs}) => {
        this.metrics?.batch(info.model, info.version, n, computeMs / 1000)
        let offset = 0
        for (const item of batch) {
          const size = item.n * info.outputSize
          if (item.state === 'running') {
            this.settle(item)
            item.resolve({output: output.subarray(offset, offset + size), queueMs: now - item.enqueuedAt, computeMs, batchSize: n})
          }
          offset += size
        }
      },
      (error: Error) => {
        for (const item of batch) {
          if (item.state !== 'running') continue
          this.settle(item)
          item.reject(new HttpError(500, `inference failed: ${error.message}`))
        }
      },
    ).finally(() => {
      clearTimeout(watchdog)
      queue.running--
      this.checkDrained()
    })
  }

  private checkDrained(): void {
    if (this.drainWaiters.length === 0) return
    const waiters = this.drainWaiters
    this.drainWaiters = []
    for (const resolve of waiters) resolve()
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.timerAt = Number.POSITIVE_INFINITY
  }
}
