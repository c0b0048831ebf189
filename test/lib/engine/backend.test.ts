import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {describe, it} from 'node:test'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {promisify} from 'node:util'
import * as tf from '../../../src/lib/engine/tf.js'
import {backendName, initEngine, nativeCoreVersion} from '../../../src/lib/engine/backend.js'
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

/** A folder whose node_modules hold package.json files only, at the given relative paths. */
async function fakePackages(packages: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'ml-native-'))
  for (const [where, version] of Object.entries(packages)) {
    await mkdir(path.join(dir, where), {recursive: true})
    const name = where.split('node_modules/').at(-1)!
    await writeFile(path.join(dir, where, 'package.json'), JSON.stringify({name, version, main: 'index.js'}))
  }
  return dir
}

describe('tfjs-node on another TensorFlow.js', () => {
  it('finds the tfjs-core a native package runs on, nested or shared', async () => {
    const nested = await fakePackages({
      'node_modules/@tensorflow/tfjs-node': '3.21.0',
      'node_modules/@tensorflow/tfjs-node/node_modules/@tensorflow/tfjs': '3.21.0',
      'node_modules/@tensorflow/tfjs-node/node_modules/@tensorflow/tfjs-core': '3.21.0',
      'node_modules/@tensorflow/tfjs-core': tf.version_core,
    })
    const shared = await fakePackages({
      'node_modules/@tensorflow/tfjs-node': tf.version_core,
      'node_modules/@tensorflow/tfjs': tf.version_core,
      'node_modules/@tensorflow/tfjs-core': tf.version_core,
    })
    try {
      const from = (dir: string) => pathToFileURL(path.join(dir, 'main.js'))
      assert.equal(nativeCoreVersion('@tensorflow/tfjs-node', from(nested)), '3.21.0')
      assert.equal(nativeCoreVersion('@tensorflow/tfjs-node', from(shared)), tf.version_core)
      assert.equal(nativeCoreVersion('@tensorflow/tfjs-node-gpu', from(shared)), undefined)
      // Not installed here: the real lookup finds nothing.
      assert.equal(nativeCoreVersion('@tensorflow/tfjs-node'), undefined)
    } finally {
      await rm(nested, {recursive: true, force: true})
      await rm(shared, {recursive: true, force: true})
    }
  })

  it('does not load a tfjs-node of another major version, and says which version to install', async () => {
    const dir = await fakePackages({
      'node_modules/@tensorflow/tfjs-node': '3.21.0',
      'node_modules/@tensorflow/tfjs-node/node_modules/@tensorflow/tfjs': '3.21.0',
      'node_modules/@tensorflow/tfjs-node/node_modules/@tensorflow/tfjs-core': '3.21.0',
    })
    try {
      // NODE_PATH reaches require.resolve (the version lookup) but not import(): had the engine tried
      // to load the package, the note would say it is not installed.
      const script = [
        `import {initEngine} from '${backendModule}'`,
        "const info = await initEngine('auto')",
        'process.stdout.write(JSON.stringify(info))',
      ].join('\n')
      const env = {...process.env, NODE_PATH: path.join(dir, 'node_modules')}
      const {stdout} = await run(process.execPath, ['--input-type=module', '-e', script], {cwd: repoRoot, env})
      const info = JSON.parse(stdout) as {backend: string, notes: string[]}
      assert.equal(info.backend, 'wasm')
      const note = info.notes.find((n) => n.startsWith('@tensorflow/tfjs-node '))
      assert.equal(note, `@tensorflow/tfjs-node is built on TensorFlow.js 3.21.0 and ml on ${tf.version_core}, which do not mix; npm install @tensorflow/tfjs-node@${tf.version_core}.`)
    } finally {
      await rm(dir, {recursive: true, force: true})
    }
  })
})
