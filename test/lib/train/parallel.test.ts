import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {sliceBounds} from '../../../src/lib/train/parallel/coordinator.js'
import {runTraining} from '../../../src/lib/train/trainer.js'
import {UserError} from '../../../src/lib/errors.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'
import {maxAbsDiff, weightsOf} from '../../support/weights.js'

function childPids(): number[] {
  try {
    // Node worker processes only (ps lists itself as a child too).
    return execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(process.pid)], {encoding: 'utf8'})
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .filter(([, comm]) => comm === 'node')
      .map(([pid]) => Number(pid))
  } catch {
    return []
  }
}

describe('sliceBounds', () => {
  it('splits a batch into contiguous near-equal slices', () => {
    assert.deepEqual(sliceBounds(10, 3), [
      {offset: 0, size: 3},
      {offset: 3, size: 3},
      {offset: 6, size: 4},
    ])
    assert.deepEqual(sliceBounds(1, 2), [
      {offset: 0, size: 0},
      {offset: 0, size: 1},
    ])
  })
})

describe('data-parallel training', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let one: string
  let two: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-parallel-'))
    await mnistFolders(dir, 400, 20)
    // Dropout and random shifts: both must draw the same randomness whatever the worker layout.
    const train = {epochs: 2, batchSize: 40, learningRate: 0.003, augment: {shift: 2}}
    one = await writeMnistConfig(dir, {model: {preset: 'cnn-tiny'}, train: {...train, devices: 1}})
    const loaded = await loadConfig(one)
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
    const {writeFile} = await import('node:fs/promises')
    two = path.join(dir, 'two.yaml')
    await writeFile(two, (await readFile(one, 'utf8')).replace('devices: 1', 'devices: 2'))
  })
  after(() => cleanup())

  it('2 workers end with the same weights as 1 worker with the same global batch', async () => {
    const single = await runTraining({loaded: await loadConfig(one), runId: 'one-worker'})
    const parallel = await runTraining({loaded: await loadConfig(two), runId: 'two-workers'})
    assert.equal(parallel.workers, 2)
    assert.equal(single.workers, 1)
    const diff = maxAbsDiff(await weightsOf(single.runDir), await weightsOf(parallel.runDir))
    assert.ok(diff <= 1e-4, `1 and 2 workers differ by ${diff}`)
    assert.ok(Math.abs(single.loss - parallel.loss) < 1e-4, `losses ${single.loss} vs ${parallel.loss}`)
  })

  it('resumes an interrupted 2-worker run to the same weights', async () => {
    const loaded = await loadConfig(two)
    const abort = new AbortController()
    await assert.rejects(
      runTraining({loaded, runId: 'two-interrupted', signal: abort.signal, onEvent: (e) => e.type === 'step' && e.epoch === 1 && e.step === 2 && abort.abort()}),
      (error: unknown) => error instanceof UserError && error.code === 'INTERRUPTED',
    )
    const resumed = await runTraining({loaded, resume: 'two-interrupted'})
    const diff = maxAbsDiff(await weightsOf(path.join(dir, 'runs', 'two-workers')), await weightsOf(resumed.runDir))
    assert.ok(diff <= 1e-5, `resumed 2-worker run differs by ${diff}`)
  })

  it('a worker that dies ends the run promptly with a clear error and the checkpoint intact', async () => {
    const loaded = await loadConfig(two)
    let killed = 0
    await assert.rejects(
      runTraining({
        loaded,
        runId: 'worker-dies',
        onEvent: (e) => {
          if (e.type === 'step' && e.epoch === 1 && e.step === 1 && !killed) {
            const pids = childPids()
            assert.ok(pids.length >= 2, `expected 2 worker processes, found ${pids.length}`)
            killed = pids[1]!
            process.kill(killed, 'SIGKILL')
          }
        },
      }),
      (error: unknown) => error instanceof UserError && error.code === 'WORKER_DIED' && error.exitCode === 4,
    )
    assert.ok(killed > 0)
    assert.deepEqual(childPids(), [], 'the other worker must be stopped too')
    const run = JSON.parse(await readFile(path.join(dir, 'runs', 'worker-dies', 'run.json'), 'utf8'))
    assert.equal(run.status, 'failed')
    assert.equal(run.epochsCompleted, 1)
    const latest = (await readFile(path.join(dir, 'runs', 'worker-dies', 'checkpoints', 'LATEST'), 'utf8')).trim()
    assert.match(latest, /^epoch-0001-step-000000$/)
    const resumed = await runTraining({loaded, resume: 'worker-dies'})
    assert.equal(resumed.epochs, 2)
  })
})
