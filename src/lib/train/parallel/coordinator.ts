// Synchronous data-parallel training: N worker processes each take a slice of every global batch,
// their gradients are summed here (all-reduce through the coordinator) and every worker applies the
// same update, so the replicas stay identical; checksums prove it every epoch.
import {fork, type ChildProcess} from 'node:child_process'
import {fileURLToPath} from 'node:url'
import {UserError} from '../../errors.js'
import type {TrainingPosition} from '../checkpoint.js'
import type {Executor, ExecutorStart} from '../executor.js'
import type {SliceResult, ValidationResult, TrainingPhase} from '../replica.js'
import {mayUseGpu} from '../../engine/gpus.js'
import type {ReadyInfo, Reply, Request} from './protocol.js'

type Pending = {resolve: (value: unknown) => void; reject: (error: Error) => void}
type RequestWithoutId = Request extends infer R ? (R extends {id: number} ? Omit<R, 'id'> : never) : never

class WorkerHandle {
  private nextId = 1
  private readonly pending = new Map<number, Pending>()
  private failure: Error | undefined
  closing = false

  constructor(
    readonly index: number,
    readonly child: ChildProcess,
    onDeath: (worker: WorkerHandle, error: Error) => void,
  ) {
    child.on('message', (reply: Reply) => {
      const pending = this.pending.get(reply.id)
      if (!pending) return
      this.pending.delete(reply.id)
      if (reply.ok) pending.resolve(reply.value)
      else
        pending.reject(
          reply.error.code
            ? new UserError(`worker ${index}: ${reply.error.message}`, {code: reply.error.code, exit: exitName(reply.error.exitCode), suggestions: reply.error.suggestions})
            : new Error(`worker ${index}: ${reply.error.message}`),
        )
    })
    child.on('exit', (code, signal) => {
      if (this.closing && code === 0) return
      const error = new UserError(`training worker ${index} (pid ${child.pid}) died (${signal ? `signal ${signal}` : `exit code ${code}`}); the last checkpoint is intact`, {
        code: 'WORKER_DIED',
        exit: 'training',
        suggestions: ['Continue with `ml train --resume`.'],
      })
      this.fail(error)
      onDeath(this, error)
    })
  }

  fail(error: Error): void {
    this.failure ??= error
    for (const pending of this.pending.values()) pending.reject(error)
    this.pending.clear()
  }

  call<T>(request: RequestWithoutId): Promise<T> {
    if (this.failure) return Promise.reject(this.failure)
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, {resolve: resolve as (v: unknown) => void, reject})
      this.child.send({...request, id} as Request, (error) => {
        if (error && this.pending.has(id)) {
          this.pending.delete(id)
          reject(error)
        }
      })
    })
  }
}

function exitName(code?: number): 'usage' | 'data' | 'training' | 'service' | 'interrupted' | 'internal' {
  switch (code) {
    case 2:
      return 'usage'
    case 3:
      return 'data'
    case 5:
      return 'service'
    case 130:
      return 'interrupted'
    default:
      return 'training'
  }
}

/** Splits `size` rows into `parts` contiguous slices whose sizes differ by at most one. */
export function sliceBounds(size: number, parts: number): Array<{offset: number; size: number}> {
  return Array.from({length: parts}, (_, i) => {
    const offset = Math.floor((size * i) / parts)
    return {offset, size: Math.floor((size * (i + 1)) / parts) - offset}
  })
}

export class ParallelExecutor implements Executor {
  /** The summed gradients of the last step, not yet sent to the workers; see applyPending(). */
  private pendingUpdate: Float32Array | undefined

  private constructor(
    private readonly handles: WorkerHandle[],
    private readonly ready: ReadyInfo,
    private readonly death: Promise<never>,
  ) {}

  static async start(options: ExecutorStart & {workers: number; signal?: AbortSignal}): Promise<ParallelExecutor> {
    const entry = fileURLToPath(new URL('./worker.js', import.meta.url))
    const pinGpus = mayUseGpu(options.config.train.backend)
    let rejectDeath: (error: Error) => void = () => {}
    const death = new Promise<never>((_, reject) => (rejectDeath = reject))
    death.catch(() => {})
    const handles: WorkerHandle[] = []
    const onDeath = (_dead: WorkerHandle, error: Error) => {
      for (const h of handles) {
        h.fail(error)
        if (h.child.exitCode === null) h.child.kill('SIGKILL')
      }
      rejectDeath(error)
    }
    for (let index = 0; index < options.workers; index++) {
      const child = fork(entry, [], {
        serialization: 'advanced',
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
        env: {...process.env, ...(pinGpus ? {CUDA_VISIBLE_DEVICES: String(index)} : {}), ML_WORKER_INDEX: String(index)},
      })
      handles.push(new WorkerHandle(index, child, onDeath))
    }
    // Worker 0's notes stand for all; another worker's own notes (e.g. features read from the cache) are added, named.
    const executor = () => {
      const [head, ...rest] = readies
      // No worker ready (init failed): an executor only to close the workers.
      if (!head) return new ParallelExecutor(handles, head!, death)
      const extra = rest.flatMap((r, i) => r.notes.filter((n) => !head.notes.includes(n)).map((n) => `worker ${i + 1}: ${n}`))
      return new ParallelExecutor(handles, {...head, notes: [...head.notes, ...extra]}, death)
    }
    let readies: ReadyInfo[] = []
    try {
      const init = (h: WorkerHandle) => h.call<ReadyInfo>({method: 'init', args: {config: options.config, store: options.store, manifest: options.manifest, checkpointsDir: options.checkpointsDir, index: h.index, workers: options.workers}})
      // On model.base, worker 0 first: a frozen base's features are computed once, by it, into the
      // feature cache, and the other workers read them from there instead of each computing them.
      const first = options.config.model.base ? [await Promise.race([init(handles[0]!), death])] : []
      readies = [...first, ...(await Promise.race([Promise.all(handles.slice(first.length).map(init)), death]))]
    } catch (error) {
      await executor().close()
      throw error
    }
    if (new Set(readies.map((r) => `${r.backend}/${r.params}`)).size !== 1) {
      await executor().close()
      throw new UserError(`training workers disagree on backend or model: ${readies.map((r) => `${r.backend}/${r.params}`).join(', ')}`, {code: 'WORKERS_MISMATCH', exit: 'training'})
    }
    return executor()
  }

  get backend() {
    return this.ready.backend
  }

  get notes() {
    return [...this.ready.notes, `Data-parallel: ${this.handles.length} worker processes, gradients all-reduced every step.`]
  }

  get workers() {
    return this.handles.length
  }

  get params() {
    return this.ready.params
  }

  get trainCount() {
    return this.ready.trainCount
  }

  get validationCount() {
    return this.ready.validationCount
  }

  get restored(): TrainingPosition | undefined {
    return this.ready.restored
  }

  private all<T>(request: RequestWithoutId | ((h: WorkerHandle) => RequestWithoutId)): Promise<T[]> {
    return Promise.race([Promise.all(this.handles.map((h) => h.call<T>(typeof request === 'function' ? request(h) : request))), this.death])
  }

  private first<T>(request: RequestWithoutId): Promise<T> {
    return Promise.race([this.handles[0]!.call<T>(request), this.death])
  }

  async step(epoch: number, step: number, _order: Uint32Array, start: number, size: number): Promise<SliceResult> {
    const slices = sliceBounds(size, this.handles.length)
    const update = this.takeUpdate()
    const results = await this.all<{flat: Float32Array} & SliceResult>((h) => ({
      method: 'step',
      args: {
        epoch,
        step,
        start: start + slices[h.index]!.offset,
        size: slices[h.index]!.size,
        rowOffset: slices[h.index]!.offset,
        globalBatch: size,
        ...(update === undefined ? {} : {update}),
      },
    }))
    // Each worker's gradient is of (its slice's loss sum / global batch): the sum is the full gradient.
    const total = results[0]!.flat
    for (const r of results.slice(1)) for (let i = 0; i < total.length; i++) total[i]! += r.flat[i]!
    this.pendingUpdate = total
    return results.reduce((acc, r) => ({lossSum: acc.lossSum + r.lossSum, correct: acc.correct + r.correct, count: acc.count + r.count}), {lossSum: 0, correct: 0, count: 0})
  }

  private takeUpdate(): Float32Array | undefined {
    const update = this.pendingUpdate
    this.pendingUpdate = undefined
    return update
  }

  /**
   * A step's update is sent with the next step request (one IPC round trip per step, not two);
   * anything that reads or saves the weights applies it first.
   */
  private async applyPending(): Promise<void> {
    const flat = this.takeUpdate()
    if (flat !== undefined) await this.all({method: 'apply', args: {flat}})
  }

  async endEpoch(epoch: number): Promise<void> {
    await this.applyPending()
    // Batch-norm moving statistics are updated from each worker's slice: average them.
    const stats = await this.all<Float32Array>({method: 'nonTrainable'})
    if (stats[0]!.length > 0) {
      const mean = new Float32Array(stats[0]!.length)
      for (const s of stats) for (let i = 0; i < mean.length; i++) mean[i]! += s[i]! / stats.length
      await this.all({method: 'setNonTrainable', args: {flat: mean}})
    }
    const sums = await this.all<[number, number]>({method: 'checksum'})
    const reference = sums[0]!
    const bad = sums.findIndex((s) => s[0] !== reference[0] || s[1] !== reference[1])
    if (bad >= 0) {
      throw new UserError(`training workers diverged after epoch ${epoch + 1}: worker ${bad} weight checksum ${sums[bad]!.join('/')} differs from worker 0's ${reference.join('/')}`, {
        code: 'WORKERS_DIVERGED',
        exit: 'training',
        suggestions: ['Resume from the last checkpoint with `ml train --resume`; report this if it repeats.'],
      })
    }
  }

  async startPhase(phase: TrainingPhase): Promise<string[]> {
    await this.applyPending()
    const unfrozen = await this.all<string[]>({method: 'phase', args: {phase}})
    return unfrozen[0]!
  }

  async validate(): Promise<ValidationResult | undefined> {
    await this.applyPending()
    return this.first({method: 'validate'})
  }

  async checkpoint(dir: string, position: TrainingPosition): Promise<void> {
    await this.applyPending()
    await this.first({method: 'checkpoint', args: {dir, position}})
  }

  async saveModel(dir: string): Promise<void> {
    await this.applyPending()
    await this.first({method: 'save', args: {dir}})
  }

  async close(): Promise<void> {
    await Promise.all(
      this.handles.map(async (h) => {
        if (h.child.exitCode !== null || h.child.signalCode !== null) return
        h.closing = true
        const exited = new Promise<void>((resolve) => h.child.once('exit', () => resolve()))
        await h.call({method: 'close'}).catch(() => {})
        const timer = setTimeout(() => h.child.kill('SIGKILL'), 10_000)
        await exited
        clearTimeout(timer)
      }),
    )
  }
}
