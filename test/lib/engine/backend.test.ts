import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import {describe, it} from 'node:test'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'
import * as tf from '../../../src/lib/engine/tf.js'
import {backendName, initEngine} from '../../../src/lib/engine/backend.js'
import {UserError} from '../../../src/lib/errors.js'

const run = promisify(execFile)
const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url))
const backendModule = new URL('../../../src/lib/engine/backend.js', import.meta.url).href

// tfjs-node and tfjs-node-gpu are optional dependencies that are not installed here.
describe('engine backend selection', () => {
  it('auto falls back to wasm and says why', async () => {
    const info = await initEngine('auto')
    assert.equal(info.backend, 'wasm')
    assert.equal(info.tfBackendName, 'wasm')
    assert.equal(info.requested, 'auto')
    assert.equal(tf.getBackend(), 'wasm')
    assert.equal(backendName(), 'wasm')
    assert.ok(info.notes.some((note) => note.includes('@tensorflow/tfjs-node')), `no install hint in ${JSON.stringify(info.notes)}`)
  })

  it('returns the same info for the same preference', async () => {
    const first = await initEngine('auto')
    await tf.setBackend('cpu')
    const second = await initEngine('auto')
    assert.equal(second, first)
    assert.equal(tf.getBackend(), 'wasm', 'the chosen backend was not re-activated')
  })

  it('runs on the pure-JS cpu backend when asked', async () => {
    const info = await initEngine('cpu')
    assert.equal(info.backend, 'cpu')
    assert.equal(tf.getBackend(), 'cpu')
    assert.equal(backendName(), 'cpu')
    const sum = tf.tidy(() => tf.add(tf.tensor([1, 2]), tf.tensor([3, 4])).dataSync())
    assert.deepEqual([...sum], [4, 6])
  })

  it('wasm can be asked for directly', async () => {
    const info = await initEngine('wasm')
    assert.equal(info.backend, 'wasm')
    assert.equal(tf.getBackend(), 'wasm')
  })

  it("refuses 'tensorflow' without tfjs-node, as a usage error with install advice", async () => {
    await assert.rejects(initEngine('tensorflow'), (error: unknown) => {
      assert.ok(error instanceof UserError, 'expected a UserError')
      assert.equal(error.exitCode, 2)
      assert.equal(error.code, 'BACKEND_UNAVAILABLE')
      assert.ok(error.suggestions.some((s) => s.includes('npm install @tensorflow/tfjs-node-gpu')))
      assert.ok(error.suggestions.some((s) => s.includes('npm install @tensorflow/tfjs-node ')))
      return true
    })
    assert.equal(tf.getBackend(), 'wasm', 'a failed selection changed the backend')
  })

  it('falls back to cpu with a note when wasm cannot start', async () => {
    // A fresh process: the wasm binary is pointed at a missing folder before anything initialises it.
    const script = [
      "import {setWasmPaths} from '@tensorflow/tfjs-backend-wasm'",
      `import {initEngine} from '${backendModule}'`,
      "setWasmPaths('/nonexistent-ml-wasm/')",
      "const info = await initEngine('wasm')",
      'process.stdout.write(JSON.stringify(info))',
    ].join('\n')
    const {stdout} = await run(process.execPath, ['--input-type=module', '-e', script], {cwd: repoRoot})
    const info = JSON.parse(stdout) as {backend: string, notes: string[]}
    assert.equal(info.backend, 'cpu')
    assert.ok(info.notes.some((note) => note.includes('wasm backend failed to initialise')), `no fallback note in ${stdout}`)
  })
})
