// Python TensorFlow reads the datasets ml writes: every shard through tf.data.TFRecordDataset,
// tf.io.parse_single_example and tf.io.decode_png, with the pixels, labels, class names and keys that
// ml itself reads, for a greyscale and a resized RGB dataset; and a Keras model trains one epoch on them.
import assert from 'node:assert/strict'
import {createHash} from 'node:crypto'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {loadSplit, readManifest} from '../../src/lib/data/store.js'
import {runJson} from '../support/cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../support/fixtures.js'
import {pythonSkip, runPython} from './support/python.js'

const skip = pythonSkip()

interface PyExample {
  key: string
  label: number
  text: string
  shape: number[]
  pixels: string
}
interface PyDataset {
  tensorflow: string
  splits: Record<string, PyExample[]>
  keras?: {loss: number; accuracy: number; images: number}
}

let dir: string
let cleanup: () => Promise<void>

before(async () => {
  if (skip) return
  ;({dir, cleanup} = await tempDir('ml-peer-tf-'))
  await mnistFolders(dir, 300, 50)
})
after(async () => {
  await cleanup?.()
})

/** Ingests the MNIST folders with `data` overrides through the CLI; the store's folder. */
async function ingest(name: string, data: Record<string, unknown>): Promise<string> {
  const config = await writeMnistConfig(dir, {name, data: {store: name, ...data}})
  const result = await runJson<{accepted: number}>(['ingest', '--config', config])
  assert.equal(result.code, 0, result.stderr)
  return path.join(dir, name)
}

/** What ml reads from `store`, in the form read_dataset.py prints. */
async function ours(store: string): Promise<Record<string, PyExample[]>> {
  const manifest = await readManifest(store)
  const out: Record<string, PyExample[]> = {}
  for (const split of ['train', 'validation', 'test'] as const) {
    if (!manifest.shards.some((s) => s.split === split)) continue
    const d = await loadSplit(store, split, manifest)
    const frame = d.height * d.width * d.channels
    out[split] = d.keys.map((key, i) => ({
      key,
      label: d.labels[i]!,
      text: manifest.classes[d.labels[i]!]!,
      shape: [d.height, d.width, d.channels],
      pixels: createHash('sha256').update(d.pixels.subarray(i * frame, (i + 1) * frame)).digest('hex'),
    }))
  }
  return out
}

describe('Python TensorFlow reads ml datasets', {skip}, () => {
  for (const [name, data] of [
    ['grey', {}],
    ['rgb', {image: {width: 32, height: 32, channels: 3}}],
  ] as const) {
    it(`${name}: tf.data + parse_single_example + decode_png give every image's pixels, label and key as ml reads them; Keras trains an epoch on the shards`, async () => {
      const store = await ingest(`dataset-${name}`, data)
      const expected = await ours(store)
      const python = await runPython<PyDataset>('read_dataset.py', [store, '--train'])
      assert.deepEqual(Object.keys(python.splits).sort(), Object.keys(expected).sort())
      for (const [split, examples] of Object.entries(expected)) {
        assert.ok(examples.length > 0)
        assert.equal(python.splits[split]!.length, examples.length, `${split}: count`)
        examples.forEach((e, i) => assert.deepEqual(python.splits[split]![i], e, `${split} example ${i} (${e.key})`))
      }
      const keras = python.keras!
      assert.equal(keras.images, expected.train!.length, 'Keras saw every training image once')
      assert.ok(Number.isFinite(keras.loss) && keras.loss > 0 && keras.loss < Math.log(10) * 3, `loss ${keras.loss}`)
    })
  }
})
