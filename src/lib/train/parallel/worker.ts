// A data-parallel training worker process: one model replica that computes gradients on its slice
// of each global batch and applies the all-reduced update it gets back from the coordinator.
import {loadSplit} from '../../data/store.js'
import {initEngine} from '../../engine/backend.js'
import {UserError} from '../../errors.js'
import {Replica} from '../replica.js'
import {permutation, rngFor} from '../rng.js'
import {leaveStopSignalsToCoordinator} from '../stop.js'
import type {ReadyInfo, Reply, Request} from './protocol.js'

let replica: Replica | undefined
let order: {epoch: number; order: Uint32Array} | undefined

function send(reply: Reply): void {
  process.send!(reply)
}

function need(): Replica {
  if (!replica) throw new Error('worker not initialised')
  return replica
}

async function handle(request: Request): Promise<unknown> {
  switch (request.method) {
    case 'init': {
      const {config, store, manifest, checkpointsDir} = request.args
      const engine = await initEngine(config.train.backend)
      const train = await loadSplit(store, 'train', manifest)
      const validation = await loadSplit(store, 'validation', manifest)
      const created = await Replica.create(config, manifest.classes.length, train, validation, checkpointsDir, manifest.fingerprint)
      replica = created.replica
      const ready: ReadyInfo = {backend: engine.backend, notes: [...engine.notes, ...replica.notes], params: replica.params, trainCount: train.count, validationCount: validation.count, restored: created.position}
      return ready
    }
    case 'step': {
      const r = need()
      const {epoch, step, start, size, rowOffset, globalBatch, update} = request.args
      if (update !== undefined) r.applyFlatGradients(update)
      if (order?.epoch !== epoch) order = {epoch, order: permutation(r.train.count, rngFor(r.config.train.seed, 'shuffle', epoch))}
      if (size === 0) return {flat: new Float32Array(r.variables.reduce((n, v) => n + v.size, 0)), lossSum: 0, correct: 0, count: 0}
      return r.gradientsOfSlice(epoch, step, order.order, start, size, rowOffset, globalBatch)
    }
    case 'apply':
      need().applyFlatGradients(request.args.flat)
      return null
    case 'nonTrainable':
      return need().nonTrainable()
    case 'setNonTrainable':
      need().setNonTrainable(request.args.flat)
      return null
    case 'checksum':
      return need().checksum()
    case 'validate':
      return need().validate()
    case 'phase':
      return need().startPhase(request.args.phase)
    case 'checkpoint':
      await need().checkpoint(request.args.dir, request.args.position)
      return null
    case 'save':
      await need().saveModel(request.args.dir)
      return null
    case 'close':
      replica?.dispose()
      replica = undefined
      setImmediate(() => process.exit(0))
      return null
  }
}

// Requests are handled strictly in order: an `apply` must land before the next `step`.
let queue = Promise.resolve()
process.on('message', (request: Request) => {
  queue = queue.then(async () => {
    try {
      send({id: request.id, ok: true, value: await handle(request)})
    } catch (error) {
      const e = error as Error & Partial<UserError>
      send({
        id: request.id,
        ok: false,
        error: {message: e.message, code: e instanceof UserError ? e.code : undefined, exitCode: e instanceof UserError ? e.exitCode : undefined, suggestions: e instanceof UserError ? e.suggestions : undefined},
      })
    }
  })
})
leaveStopSignalsToCoordinator()
// The coordinator is gone: nothing left to do.
process.on('disconnect', () => process.exit(0))
