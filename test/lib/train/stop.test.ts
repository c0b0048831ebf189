import assert from 'node:assert/strict'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {UserError} from '../../../src/lib/errors.js'
import {readRunInfo} from '../../../src/lib/model/run-dir.js'
import {stopOnSignals, yieldToEventLoop} from '../../../src/lib/train/stop.js'
import {runTraining} from '../../../src/lib/train/trainer.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../../support/fixtures.js'

describe('stopping on signals', () => {
  it('the first signal says so at once and aborts; the second exits at once', () => {
    const notices: string[] = []
    let exits = 0
    const stop = stopOnSignals({notice: (m) => notices.push(m), exitNow: () => void exits++})
    try {
      process.emit('SIGINT')
      assert.equal(stop.signal.aborted, true)
      assert.match(notices[0]!, /Ctrl-C: stopping after this step/)
      assert.equal(exits, 0)
      process.emit('SIGTERM')
      assert.equal(exits, 1)
      assert.match(notices[1]!, /SIGTERM again: stopping now/)
    } finally {
      stop.release()
    }
    assert.equal(process.listenerCount('SIGINT'), 0)
    assert.equal(process.listenerCount('SIGTERM'), 0)
  })

  it('yieldToEventLoop lets callbacks queued behind I/O run', async () => {
    let ran = false
    setImmediate(() => (ran = true))
    await yieldToEventLoop()
    assert.equal(ran, true)
  })
})

describe('a training run asked to stop', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let configFile: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-stop-'))
    await mnistFolders(dir, 400, 20)
    configFile = await writeMnistConfig(dir, {train: {epochs: 1, batchSize: 8}})
    const loaded = await loadConfig(configFile)
    await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  })
  after(() => cleanup())

  it('stops within a step of the request, in the last epoch too, checkpoints and records it', async () => {
    const loaded = await loadConfig(configFile)
    const abort = new AbortController()
    let steps = 0
    let askedAt = -1
    const error = await runTraining({
      loaded,
      runId: 'stopped',
      signal: abort.signal,
      onEvent: (e) => {
        if (e.type !== 'step') return
        steps = e.steps
        // Asked the way a signal handler asks: from a macrotask, not from inside the step loop.
        if (e.step === 2) {
          askedAt = e.step
          setImmediate(() => abort.abort())
        }
      },
    }).catch((e: unknown) => e)
    assert.ok(error instanceof UserError, `expected an interruption, got ${String(error)}`)
    assert.equal(error.code, 'INTERRUPTED')
    assert.equal(error.exitCode, 130)
    const stoppedAt = Number(/step (\d+)/.exec(error.message)![1]) - 1
    assert.ok(steps > 20)
    assert.ok(stoppedAt - askedAt <= 2, `asked at step ${askedAt + 1}, stopped at step ${stoppedAt + 1} of ${steps}`)
    const info = await readRunInfo(path.join(dir, 'runs', 'stopped'))
    assert.equal(info.status, 'interrupted')
  })
})
