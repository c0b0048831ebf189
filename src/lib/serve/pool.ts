// The model instances of one server process: worker threads that each hold every loaded model
// version and run one batch at a time. A dead instance is replaced and its models reloaded.
// A batch's input and output cross in a SharedArrayBuffer each instance keeps (grown when a larger
// batch comes): a fresh buffer per batch, moved to the worker, counted as external memory there and
// triggered a full garbage collection in the worker every couple of seconds under load (each one a
// 10-25 ms stall of every queued request).
import {EventEmitter} from 'node:events'
import {Worker} from 'node:worker_threads'
import type {EnginePreference} from '../engine/backend.js'
import type {JsonLog} from './log.js'
import type {FromWorker, LoadSpec, ToWorker} from './worker-protocol.js'

export interface BatchResult {
  output: Float32Array
  computeMs: number
}

/** What the scheduler needs from a set of instances (a fake in the scheduler's tests). */
export interface Instances {
  idleCount(): number
  busyCount(): number
  /**
   * Runs a batch of n images, given as parts (whole images each, in order), on an idle instance; call
   * only when idleCount() > 0. The parts are read before run() returns: the caller may reuse them then.
   */
  run(key: string, parts: readonly Float32Array[], n: number): Promise<BatchResult>
  /** Called whenever an instance becomes idle. */
  onIdle(listener: () => void): void
}

interface Pending {
  resolve: (message: FromWorker) => void
  reject: (error: Error) => void
}

class Instance {
  busy = false
  alive = false
  backend = ''
  readonly pending = new Map<number, Pending>()
  /** The batch buffer shared with the worker: input floats, then output floats; undefined until the first batch. */
  shared: SharedArrayBuffer | undefined

  constructor(
    readonly index: number,
    readonly worker: Worker,
  ) {}
}

const WORKER_URL = new URL('./instance-worker.js', import.meta.url)

/** Floats per image in and out for a loaded model version. */
function sizes(spec: LoadSpec): {input: number; output: number} {
  return {input: spec.inputShape[0] * spec.inputShape[1] * spec.inputShape[2], output: spec.numClasses}
}

export class InstancePool extends EventEmitter implements Instances {
  private readonly instances: Instance[] = []
  private readonly specs = new Map<string, LoadSpec>()
  private nextId = 1
  private closing = false

  private constructor(
    private readonly engine: EnginePreference,
    private readonly log: JsonLog,
  ) {
    super()
  }

  /** Starts `count` instances and waits until each has initialised its engine. */
  static async start(count: number, engine: EnginePreference, log: JsonLog): Promise<InstancePool> {
    const pool = new InstancePool(engine, log)
    try {
      await Promise.all(Array.from({length: count}, (_, i) => pool.spawn(i)))
    } catch (error) {
      await pool.close()
      throw error
    }
    return pool
  }

  get size(): number {
    return this.instances.length
  }

  /** TensorFlow.js's backend in the instances, once one has started it (with its first tfjs version); '' before. */
  get backend(): string {
    return this.instances.find((i) => i.backend !== '')?.backend ?? ''
  }

  /** A replacement starts busy, so that no batch reaches it before its models are loaded. */
  private spawn(index: number, busy = false): Promise<Instance> {
    const worker = new Worker(WORKER_URL, {workerData: {engine: this.engine}})
    const instance = new Instance(index, worker)
    instance.busy = busy
    this.instances[index] = instance
    return new Promise<Instance>((resolve, reject) => {
      const onStartExit = (code: number) => reject(new Error(`model instance ${index} exited with code ${code} while starting`))
      worker.once('exit', onStartExit)
      worker.once('error', reject)
      worker.on('message', (message: FromWorker) => {
        if (message.type === 'engine') {
          instance.backend = message.backend
          this.emit('engine', message.backend)
          return
        }
        if (message.type === 'ready') {
          worker.off('exit', onStartExit)
          worker.off('error', reject)
          instance.alive = true
          worker.on('error', (error) => this.died(instance, error))
          worker.on('exit', (code) => this.died(instance, new Error(`exited with code ${code}`)))
          resolve(instance)
          return
        }
        const pending = instance.pending.get(message.id)
        if (pending === undefined) return
        instance.pending.delete(message.id)
        pending.resolve(message)
      })
    })
  }

  private died(instance: Instance, error: Error): void {
    if (!instance.alive) return
    instance.alive = false
    for (const pending of instance.pending.values()) pending.reject(new Error(`model instance ${instance.index} died: ${error.message}`))
    instance.pending.clear()
    if (this.closing) return
    this.log.event('error', 'instance-died', {instance: instance.index, reason: error.message})
    this.emit('restart')
    void this.replace(instance.index)
  }

  private async replace(index: number): Promise<void> {
    for (let attempt = 1; !this.closing; attempt++) {
      try {
        const instance = await this.spawn(index, true)
        for (const spec of this.specs.values()) await this.request(instance, {type: 'load', id: 0, spec})
        instance.busy = false
        this.log.event('info', 'instance-replaced', {instance: index, models: [...this.specs.keys()]})
        this.emit('replaced', index)
        this.emit('idle')
        return
      } catch (error) {
        this.log.event('error', 'instance-restart-failed', {instance: index, attempt, reason: (error as Error).message})
        // Back off so that a model that kills every instance does not spin the CPU.
        await new Promise((resolve) => setTimeout(resolve, Math.min(30_000, 500 * 2 ** attempt)).unref())
      }
    }
  }

  private request(instance: Instance, message: ToWorker): Promise<FromWorker> {
    const id = this.nextId++
    const sent = {...message, id} as ToWorker
    return new Promise<FromWorker>((resolve, reject) => {
      if (!instance.alive) {
        reject(new Error(`model instance ${instance.index} is not running`))
        return
      }
      instance.pending.set(id, {
        resolve: (reply) => (reply.type === 'error' ? reject(new Error(reply.message)) : resolve(reply)),
        reject,
      })
      instance.worker.postMessage(sent)
    })
  }

  idleCount(): number {
    let n = 0
    for (const instance of this.instances) if (instance.alive && !instance.busy) n++
    return n
  }

  busyCount(): number {
    let n = 0
    for (const instance of this.instances) if (instance.alive && instance.busy) n++
    return n
  }

  onIdle(listener: () => void): void {
    this.on('idle', listener)
  }

  async run(key: string, parts: readonly Float32Array[], n: number): Promise<BatchResult> {
    const instance = this.instances.find((i) => i.alive && !i.busy)
    if (instance === undefined) throw new Error('no idle model instance')
    const spec = this.specs.get(key)
    if (spec === undefined) throw new Error(`model ${key} is not loaded`)
    const size = sizes(spec)
    const inputFloats = n * size.input
    const given = parts.reduce((sum, part) => sum + part.length, 0)
    if (given !== inputFloats) throw new Error(`a batch of ${n} images needs ${inputFloats} floats, got ${given}`)
    instance.busy = true
    try {
      // Grown to the next power of two of images, so that a few sizes cover every batch.
      const bytes = 4 * 2 ** Math.ceil(Math.log2(n)) * (size.input + size.output)
      const grown = instance.shared === undefined || instance.shared.byteLength < bytes ? new SharedArrayBuffer(bytes) : undefined
      const shared = (instance.shared = grown ?? instance.shared!)
      const input = new Float32Array(shared, 0, inputFloats)
      let offset = 0
      for (const part of parts) {
        input.set(part, offset)
        offset += part.length
      }
      const reply = await this.request(instance, {type: 'infer', id: 0, key, n, shared: grown})
      if (reply.type !== 'result') throw new Error(`unexpected reply ${reply.type}`)
      // Copied out: the buffer is the next batch's once the instance is idle.
      return {output: new Float32Array(shared, 4 * inputFloats, reply.length).slice(), computeMs: reply.computeMs}
    } finally {
      if (instance.alive) {
        instance.busy = false
        this.emit('idle')
      }
    }
  }

  /** Loads (and warms up) a model version in every instance; on any failure it is unloaded again. */
  async load(spec: LoadSpec): Promise<void> {
    const live = this.instances.filter((i) => i.alive)
    const results = await Promise.allSettled(live.map((i) => this.request(i, {type: 'load', id: 0, spec})))
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) {
      await Promise.allSettled(live.map((i) => this.request(i, {type: 'unload', id: 0, key: spec.key})))
      throw failed.reason as Error
    }
    this.specs.set(spec.key, spec)
  }

  async unload(key: string): Promise<void> {
    this.specs.delete(key)
    await Promise.allSettled(this.instances.filter((i) => i.alive).map((i) => this.request(i, {type: 'unload', id: 0, key})))
  }

  /** Terminates one instance as if it had crashed (tests). */
  async crash(index: number): Promise<void> {
    await this.instances[index]?.worker.terminate()
  }

  async close(): Promise<void> {
    this.closing = true
    await Promise.all(this.instances.filter(Boolean).map((i) => {
      i.alive = false
      return i.worker.terminate()
    }))
  }
}
