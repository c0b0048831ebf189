// `ml train` as a newcomer meets it: Ctrl-C the way a terminal sends it (SIGINT to the whole process
// group: the CLI and its training workers) and SIGTERM the way a CI runner stops a job; progress on
// stderr under --json; a config that no longer matches the dataset; a mistyped flag.
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {BIN} from '../support/cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../support/fixtures.js'
import {runJson} from '../support/cli.js'

interface Stopped {
  code: number | null
  stdout: string
  stderr: string
}

/** Starts `ml train` in its own process group and sends `signal` to the group once training started. */
function trainAndSignal(args: string[], signal: NodeJS.Signals): Promise<Stopped> {
  const child = spawn(process.execPath, [BIN, 'train', ...args], {detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: {...process.env, NO_COLOR: '1'}})
  let stdout = ''
  let stderr = ''
  let sent = false
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d
    // The start line comes right before the first step.
    if (!sent && /steps\/epoch/.test(stderr)) {
      sent = true
      process.kill(-child.pid!, signal)
    }
  })
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => {
      // Never leave a worker behind, whatever happened.
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {
        // The group is already gone.
      }
      resolve({code, stdout, stderr})
    })
  })
}

describe('ml train', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let config: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-train-stop-'))
    await mnistFolders(dir, 300, 10)
    // One long epoch: the interruption lands in the last epoch, which used to finish and exit 0.
    config = await writeMnistConfig(dir, {train: {epochs: 1, batchSize: 2}})
    const ingest = await runJson(['ingest', '--config', config])
    assert.equal(ingest.code, 0, ingest.stderr)
  })
  after(() => cleanup())

  for (const [devices, signal] of [[1, 'SIGINT'], [2, 'SIGINT'], [1, 'SIGTERM']] as const) {
    it(`${signal} with ${devices} worker${devices > 1 ? 's' : ''}: "stopping after this step", a checkpoint, exit 130, status interrupted`, async () => {
      const runId = `stop-${devices}-${signal}`
      const result = await trainAndSignal(['--config', config, '--devices', String(devices), '--run-id', runId, '--json'], signal)
      assert.equal(result.code, 130, result.stderr)
      assert.match(result.stderr, /stopping after this step/)
      const json = JSON.parse(result.stdout) as {error: {code: string; suggestions: string[]}}
      assert.equal(json.error.code, 'INTERRUPTED')
      assert.ok(json.error.suggestions.some((s) => s.includes(`--resume ${runId}`)))
      const info = JSON.parse(await readFile(path.join(dir, 'runs', runId, 'run.json'), 'utf8')) as {status: string}
      assert.equal(info.status, 'interrupted')
      if (devices > 1 || signal !== 'SIGINT') return
      // The checkpoint is there: the run resumes and completes.
      const resumed = await runJson<{epochs: number}>(['train', '--config', config, '--devices', String(devices), '--resume', runId])
      assert.equal(resumed.code, 0, resumed.stderr)
      assert.equal(resumed.json.epochs, 1)
      // --json keeps the progress lines on stderr.
      assert.match(resumed.stderr, /^epoch 1\/1 loss [\d.]+ acc [\d.]+ val_loss/m)
    })
  }

  it('--quiet keeps stderr free of progress', async () => {
    const result = await runJson(['train', '--config', config, '--epochs', '1', '--quiet', '--run-id', 'quiet'])
    assert.equal(result.code, 0, result.stderr)
    assert.doesNotMatch(result.stderr, /epoch 1\/1/)
  })

  it('fails, as ingest does, when data.image no longer matches the dataset store', async () => {
    const changed = path.join(dir, 'wider.yaml')
    await writeFile(changed, (await readFile(config, 'utf8')).replace('width: 28', 'width: 32'))
    const result = await runJson<{error: {code: string; message: string}}>(['train', '--config', changed])
    assert.equal(result.code, 2)
    assert.equal(result.json.error.code, 'DATASET_SPEC_MISMATCH')
    assert.match(result.json.error.message, /holds 28x28x1 .* data\.image asks for 32x28x1/)
  })

  it('a bad --backend is a flag error, not an invalid ml.yaml', async () => {
    const result = await runJson<{error: {code: string; message: string}}>(['train', '--config', config, '--backend', 'gpu'])
    assert.equal(result.code, 2)
    assert.match(result.json.error.message, /--backend/)
    assert.doesNotMatch(result.json.error.message, /ml\.yaml|config/i)
  })
})
