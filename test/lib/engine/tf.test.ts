// src/lib/engine/tf.ts provides TensorFlow.js from core, layers, the converter and the cpu backend,
// without the @tensorflow/tfjs bundle: gradients and chained tensor methods come from
// dist/src/lib/engine/tfjs-registrations.cjs (scripts/bundle-tfjs.ts), registered on the one
// installed tfjs-core, never on a copy of it.
import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import {readFile} from 'node:fs/promises'
import {createRequire} from 'node:module'
import path from 'node:path'
import {describe, it} from 'node:test'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'
import * as tf from '../../../src/lib/engine/tf.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {seededRandom} from '../../support/random.js'

const run = promisify(execFile)
const require = createRequire(import.meta.url)
// The package itself, as every other @tensorflow/* package requires it (not through tf.ts).
const core = require('@tensorflow/tfjs-core') as typeof tf
const registrations = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../src/lib/engine/tfjs-registrations.cjs')

/** A tiny convnet on 8x8 grey images, seeded: conv2d, max-pool, dense and softmax gradients. */
function tinyModel(): tf.Sequential {
  const init = (seed: number) => tf.initializers.glorotUniform({seed})
  return tf.sequential({layers: [
    tf.layers.conv2d({inputShape: [8, 8, 1], filters: 4, kernelSize: 3, activation: 'relu', kernelInitializer: init(1)}),
    tf.layers.maxPooling2d({poolSize: 2}),
    tf.layers.flatten(),
    tf.layers.dense({units: 2, activation: 'softmax', kernelInitializer: init(2)}),
  ]})
}

/** Class 1 images are bright in the top half, class 0 in the bottom half. */
function tinyData(n: number): {xs: tf.Tensor4D, ys: tf.Tensor2D} {
  const random = seededRandom(7)
  const pixels: number[] = []
  const labels: number[] = []
  for (let i = 0; i < n; i++) {
    const label = i % 2
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) pixels.push(((y < 4) === (label === 1) ? 0.8 : 0.1) + random() * 0.1)
    labels.push(label === 1 ? 0 : 1, label)
  }
  return {xs: tf.tensor4d(pixels, [n, 8, 8, 1]), ys: tf.tensor2d(labels, [n, 2])}
}

describe('TensorFlow.js without the @tensorflow/tfjs bundle', () => {
  it('loads one tfjs-core and no bundle', () => {
    const loaded = Object.keys(require.cache)
    assert.deepEqual(loaded.filter((f) => /[/\\]@tensorflow[/\\]tfjs[/\\]/.test(f)), [], 'the @tensorflow/tfjs bundle was loaded')
    const cores = loaded.filter((f) => /[/\\]@tensorflow[/\\]tfjs-core[/\\]dist[/\\][^/\\]+\.js$/.test(f))
    assert.equal(cores.length, 1, `tfjs-core entries loaded: ${cores.join(', ')}`)
    assert.ok(loaded.includes(registrations), 'the registrations were not loaded')
  })

  it('shares one engine, one Tensor class and one gradient registry with the installed tfjs-core', async () => {
    assert.equal(tf.engine(), core.engine())
    assert.equal(tf.Tensor, core.Tensor)
    const globals = (globalThis as {_tfGlobals?: Map<string, unknown>})._tfGlobals
    assert.equal(globals?.get('Tensor'), core.Tensor, 'chained methods would go on another Tensor class')
    const gradients = globals?.get('gradRegistry') as Map<string, unknown> | undefined
    assert.ok(gradients !== undefined && gradients.size >= 100, `gradients registered: ${gradients?.size}`)
    for (const kernel of ['BatchMatMul', 'Conv2D', 'MaxPool', 'Relu', 'Softmax', 'Sum', 'Cast', 'Reshape']) {
      assert.equal(core.getGradient(kernel), gradients.get(kernel), `${kernel}: not in core's registry`)
      assert.ok(core.getGradient(kernel) !== undefined, `${kernel}: no gradient`)
    }
    // The registrations require tfjs-core; they carry none of its classes.
    const text = await readFile(registrations, 'utf8')
    assert.match(text, /require\("@tensorflow\/tfjs-core"\)/)
    assert.doesNotMatch(text, /\bclass (Tensor|Variable|Engine|Environment)\b/)
  })

  it('registers the same gradients and tensor methods as the @tensorflow/tfjs bundle', async () => {
    // Each in a fresh process: what ends up in the global registries. The bundle is a development
    // dependency here (nsfwjs needs it), never loaded by ml itself.
    const tfModule = new URL('../../../src/lib/engine/tf.js', import.meta.url).href
    const registered = async (load: string) => {
      const script = [
        load,
        "const globals = globalThis._tfGlobals",
        "const names = {gradients: [...globals.get('gradRegistry').keys()].sort(), methods: Object.getOwnPropertyNames(globals.get('Tensor').prototype).sort()}",
        'process.stdout.write(JSON.stringify(names))',
      ].join('\n')
      const {stdout} = await run(process.execPath, ['--input-type=module', '-e', script], {cwd: path.dirname(fileURLToPath(import.meta.url))})
      return JSON.parse(stdout) as {gradients: string[], methods: string[]}
    }
    const ours = await registered(`await import('${tfModule}')`)
    const bundle = await registered("import {createRequire} from 'node:module'; createRequire(process.cwd() + '/')('@tensorflow/tfjs')")
    assert.ok(ours.gradients.length >= 100 && ours.methods.includes('argMax'))
    assert.deepEqual(ours, bundle)
  })

  for (const backend of ['cpu', 'wasm'] as const) {
    it(`${backend}: chained methods and a gradient`, async () => {
      await initEngine(backend)
      tf.tidy(() => {
        const x = tf.tensor1d([3, -1, 7, 2])
        assert.deepEqual([...x.argMax().dataSync()], [2])
        assert.equal(tf.tensor1d([1, 2], 'int32').toFloat().dtype, 'float32')
        assert.deepEqual([...x.square().sum().dataSync()], [63])
        // d/dx sum(x^2 * 3) = 6x, through Square, Mul and Sum's gradients.
        const dx = tf.grad((v: tf.Tensor) => v.square().mul(3).sum())(x)
        assert.deepEqual([...dx.dataSync()], [18, -6, 42, 12])
      })
    })

    it(`${backend}: a tiny convnet trains (its loss falls)`, async () => {
      await initEngine(backend)
      const model = tinyModel()
      model.compile({optimizer: tf.train.sgd(0.5), loss: 'categoricalCrossentropy', metrics: ['accuracy']})
      const {xs, ys} = tinyData(16)
      const history = await model.fit(xs, ys, {epochs: 6, batchSize: 8, shuffle: false, verbose: 0})
      const loss = history.history.loss as number[]
      assert.ok(loss.every(Number.isFinite), `loss ${loss.join(', ')}`)
      assert.ok(loss.at(-1)! < loss[0]! * 0.8, `the loss did not fall: ${loss.join(', ')}`)
      tf.dispose([xs, ys])
      model.dispose()
    })
  }
})
