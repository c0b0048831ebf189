import assert from 'node:assert/strict'
import {EventEmitter, once} from 'node:events'
import {describe, it} from 'node:test'
import {HttpError} from '../../../src/lib/serve/http-error.js'
import {takeFloats} from '../../../src/lib/serve/floats.js'
import type {BatchResult, Instances} from '../../../src/lib/serve/pool.js'
import {Scheduler, type CancelToken, type SchedulerOptions} from '../../../src/lib/serve/scheduler.js'

interface Run {
  key: string
  n: number
  input: Float32Array
  finish(output?: Float32Array): void
  fail(error: Error): void
}

/** Instances whose batches finish only when the test says so. */
class FakeInstances implements Instances {
  busy = 0
  readonly runs: Run[] = []
  private readonly listeners: Array<() => void> = []
  readonly events = new EventEmitter()

  constructor(readonly count: number) {}

  idleCount(): number {
    return this.count - this.busy
  }

  busyCount(): number {
    return this.busy
  }

  onIdle(listener: () => void): void {
    this.listeners.push(listener)
  }

  run(key: string, parts: readonly Float32Array[], n: number): Promise<BatchResult> {
    assert.ok(this.busy < this.count, 'the scheduler dispatched to a busy instance')
    const input = new Float32Array(parts.reduce((sum, part) => sum + part.length, 0))
    let offset = 0
    for (const part of parts) {
      input.set(part, offset)
      offset += part.length
    }
    this.busy++
    return new Promise<BatchResult>((resolve, reject) => {
      const release = () => {
        this.busy--
        for (const listener of this.listeners) listener()
      }
      this.runs.push({
        key,
        n,
        input,
        // Output row i = [sum of input row i, i]: lets tests check each request got its own rows.
        finish: (output) => {
          const out = output ?? rowsOf(input, n)
          release()
          resolve({output: out, computeMs: 1})
        },
        fail: (error) => {
          release()
          reject(error)
        },
      })
      this.events.emit('run')
    })
  }
}

const IN = 2
const OUT = 2

function rowsOf(input: Float32Array, n: number): Float32Array {
  const out = new Float32Array(n * OUT)
  for (let i = 0; i < n; i++) {
    out[i * OUT] = input[i * IN]! + input[i * IN + 1]!
    out[i * OUT + 1] = i
  }
  return out
}

function image(value: number, n = 1): Float32Array {
  return new Float32Array(n * IN).fill(value)
}

function setup(count: number, options: Partial<SchedulerOptions> = {}) {
  const instances = new FakeInstances(count)
  const scheduler = new Scheduler(instances, {maxBatchSize: 4, preferredBatchSize: 4, maxQueueDelayMs: 0, maxQueueSize: 16, ...options})
  scheduler.addModel({key: 'm/1', model: 'm', version: '1', outputSize: OUT})
  return {instances, scheduler}
}

const far = () => performance.now() + 60_000

describe('dynamic batching scheduler', () => {
  it('dispatches at once to an idle instance, even with a long queue delay', async () => {
    const {instances, scheduler} = setup(2, {maxQueueDelayMs: 60_000})
    const result = scheduler.submit('m/1', image(1), 1, far())
    assert.equal(instances.runs.length, 1, 'an idle server must not wait to fill a batch')
    assert.equal(instances.runs[0]!.n, 1)
    instances.runs[0]!.finish()
    const outcome = await result
    assert.deepEqual([...outcome.output], [2, 0])
    assert.equal(outcome.batchSize, 1)
    scheduler.close()
  })

  it('groups requests that queued while the instance was busy, and gives each its own rows', async () => {
    const {instances, scheduler} = setup(1)
    const first = scheduler.submit('m/1', image(1), 1, far())
    const queued = [scheduler.submit('m/1', image(2), 1, far()), scheduler.submit('m/1', image(3, 2), 2, far()), scheduler.submit('m/1', image(4), 1, far())]
    assert.equal(instances.runs.length, 1)
    assert.equal(scheduler.depth('m/1'), 4)
    instances.runs[0]!.finish()
    await first
    assert.equal(instances.runs.length, 2, 'the queued requests run as one batch')
    assert.equal(instances.runs[1]!.n, 4)
    instances.runs[1]!.finish()
    const outcomes = await Promise.all(queued)
    assert.deepEqual(outcomes.map((o) => [...o.output]), [[4, 0], [6, 1, 6, 2], [8, 3]])
    assert.deepEqual(outcomes.map((o) => o.batchSize), [4, 4, 4])
    scheduler.close()
  })

  it('never puts more than maxBatchSize images in a batch, and never splits a request', async () => {
    const {instances, scheduler} = setup(1, {maxBatchSize: 3})
    const results = [scheduler.submit('m/1', image(1), 1, far())]
    for (const n of [2, 2, 1, 3]) results.push(scheduler.submit('m/1', image(1, n), n, far()))
    const sizes: number[] = []
    while (sizes.length < 4) {
      const run = instances.runs[sizes.length]!
      sizes.push(run.n)
      run.finish()
      await new Promise((resolve) => setImmediate(resolve))
    }
    await Promise.all(results)
    assert.deepEqual(sizes, [1, 2, 3, 3])
    scheduler.close()
  })

  it('while another instance is busy, a free one waits to fill towards the preferred size', async () => {
    const {instances, scheduler} = setup(2, {preferredBatchSize: 3, maxQueueDelayMs: 60_000})
    const first = scheduler.submit('m/1', image(1), 1, far())
    const second = scheduler.submit('m/1', image(1), 1, far())
    const third = scheduler.submit('m/1', image(1), 1, far())
    assert.equal(instances.runs.length, 1, 'under load the free instance waits for more requests')
    const fourth = scheduler.submit('m/1', image(1), 1, far())
    assert.equal(instances.runs.length, 2, 'the preferred size reached: dispatched without waiting')
    assert.equal(instances.runs[1]!.n, 3)
    for (const run of instances.runs) run.finish()
    await Promise.all([first, second, third, fourth])
    scheduler.close()
  })

  it('a waiting batch goes after maxQueueDelayMs, or as soon as every instance is idle', async () => {
    const {instances, scheduler} = setup(2, {preferredBatchSize: 4, maxQueueDelayMs: 20})
    const first = scheduler.submit('m/1', image(1), 1, far())
    const waiting = scheduler.submit('m/1', image(1), 1, far())
    assert.equal(instances.runs.length, 1)
    await once(instances.events, 'run')
    assert.equal(instances.runs[1]!.n, 1, 'dispatched by the queue-delay timer')
    const third = scheduler.submit('m/1', image(1), 1, far())
    assert.equal(instances.runs.length, 2)
    instances.runs[0]!.finish()
    instances.runs[1]!.finish()
    assert.equal(instances.runs.length, 3, 'an idle server does not wait')
    instances.runs[2]!.finish()
    await Promise.all([first, waiting, third])
    scheduler.close()
  })

  it('sheds load with 503 and Retry-After when the queue is full', async () => {
    const {instances, scheduler} = setup(1, {maxQueueSize: 3})
    const running = scheduler.submit('m/1', image(1), 1, far())
    const queued = [scheduler.submit('m/1', image(1, 2), 2, far()), scheduler.submit('m/1', image(1), 1, far())]
    await assert.rejects(scheduler.submit('m/1', image(1), 1, far()), (error: HttpError) => {
      assert.equal(error.status, 503)
      assert.equal(error.headers['Retry-After'], '1')
      assert.match(error.message, /queue .* is full/)
      return true
    })
    instances.runs[0]!.finish()
    instances.runs[1]!.finish()
    await Promise.all([running, ...queued])
    scheduler.close()
  })

  it('answers 504 when the deadline passes in the queue, and the expired work never runs', async () => {
    const {instances, scheduler} = setup(1)
    const running = scheduler.submit('m/1', image(1), 1, far())
    const expiring = scheduler.submit('m/1', image(5), 1, performance.now() + 20)
    const later = scheduler.submit('m/1', image(6), 1, far())
    await assert.rejects(expiring, (error: HttpError) => error.status === 504)
    assert.equal(scheduler.depth('m/1'), 1)
    instances.runs[0]!.finish()
    await running
    assert.equal(instances.runs.length, 2)
    assert.equal(instances.runs[1]!.n, 1, 'only the live request is computed')
    assert.equal(instances.runs[1]!.input[0], 6)
    instances.runs[1]!.finish()
    await later
    scheduler.close()
  })

  it('answers 504 when a running batch outlives the deadline', async () => {
    const {instances, scheduler} = setup(1)
    const result = scheduler.submit('m/1', image(1), 1, performance.now() + 20)
    await assert.rejects(result, (error: HttpError) => error.status === 504)
    instances.runs[0]!.finish()
    await scheduler.drain()
    scheduler.close()
  })

  it('drops the queued work of a client that went away', async () => {
    const {instances, scheduler} = setup(1)
    const running = scheduler.submit('m/1', image(1), 1, far())
    const token: CancelToken = {}
    const abandoned = scheduler.submit('m/1', image(7), 1, far(), token)
    assert.equal(scheduler.depth('m/1'), 1)
    token.cancel!()
    assert.equal(scheduler.depth('m/1'), 0)
    await assert.rejects(abandoned, (error: HttpError) => error.status === 499)
    instances.runs[0]!.finish()
    await running
    await scheduler.drain()
    assert.equal(instances.runs.length, 1, 'the abandoned request never reached an instance')
    scheduler.close()
  })

  it('rejects a request larger than maxBatchSize and an unknown model', async () => {
    const {scheduler} = setup(1)
    await assert.rejects(scheduler.submit('m/1', image(1, 5), 5, far()), (error: HttpError) => error.status === 400)
    await assert.rejects(scheduler.submit('m/2', image(1), 1, far()), (error: HttpError) => error.status === 503)
    scheduler.close()
  })

  it('fails every request of a batch whose instance fails with 500, and keeps serving', async () => {
    const {instances, scheduler} = setup(1)
    const first = scheduler.submit('m/1', image(1), 1, far())
    const batch = [scheduler.submit('m/1', image(1), 1, far()), scheduler.submit('m/1', image(1), 1, far())]
    instances.runs[0]!.fail(new Error('boom'))
    await assert.rejects(first, (error: HttpError) => error.status === 500 && /boom/.test(error.message))
    instances.runs[1]!.finish()
    await Promise.all(batch)
    scheduler.close()
  })

  it('drain and removeModel wait for queued and running work', async () => {
    const {instances, scheduler} = setup(1)
    const results = [scheduler.submit('m/1', image(1), 1, far()), scheduler.submit('m/1', image(1), 1, far())]
    let drained = false
    const draining = scheduler.removeModel('m/1').then(() => (drained = true))
    await assert.rejects(scheduler.submit('m/1', image(1), 1, far()), (error: HttpError) => error.status === 503)
    instances.runs[0]!.finish()
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(drained, false)
    instances.runs[1]!.finish()
    await Promise.all(results)
    await draining
    assert.equal(drained, true)
    scheduler.close()
  })

  it('hands a request\'s floats back for reuse once its batch has them, or once it is dropped', async () => {
    const {instances, scheduler} = setup(1)
    const running = takeFloats(IN)
    running.fill(5)
    const queued = takeFloats(3 * IN)
    queued.fill(1)
    const first = scheduler.submit('m/1', running, 1, far())
    // Handed to the instance (which copied it): the next request of that size may have it.
    assert.equal(takeFloats(IN), running)
    running.fill(9)
    const token: CancelToken = {}
    const abandoned = scheduler.submit('m/1', queued, 3, far(), token)
    assert.notEqual(takeFloats(3 * IN), queued, 'still queued: not reused')
    token.cancel!()
    await assert.rejects(abandoned, (error: HttpError) => error.status === 499)
    assert.equal(takeFloats(3 * IN), queued, 'dropped: reused')
    instances.runs[0]!.finish()
    assert.deepEqual([...(await first).output], [10, 0])
    scheduler.close()
  })
})
