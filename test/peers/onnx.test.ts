// Models other tools load: every preset exported by `ml export` as ONNX and for Triton, plain and
// quantized (float16, uint8), passes onnx.checker.check_model(full_check=True); Python onnxruntime
// gives the probabilities ml predicts within 1e-4; and config.pbtxt parses with protobuf's
// text_format into Triton's own ModelConfig message, its input and output matching the ONNX graph.
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {maxAbsDiff} from '../../src/lib/export/onnx-runtime.js'
import {runJson} from '../support/cli.js'
import {mnistFolders, tempDir, writeMnistConfig} from '../support/fixtures.js'
import {referencePredictions, testDigits} from '../support/serve-fixtures.js'
import {pythonSkip, runPython} from './support/python.js'

const skip = pythonSkip()
const PRESETS = ['mlp', 'cnn-tiny', 'cnn-small', 'cnn'] as const
const QUANTIZE = ['none', 'float16', 'uint8'] as const

interface Checked {
  inputs: Array<{name: string; dims: Array<number | string>; type: string}>
  outputs: Array<{name: string; dims: Array<number | string>; type: string}>
  probabilities: number[]
  config?: {name: string; platform: string; max_batch_size: number; input: Array<{name: string; data_type: string; dims: string[]}>; output: Array<{name: string; data_type: string; dims: string[]; label_filename?: string}>}
}

let dir: string
let cleanup: () => Promise<void>

before(async () => {
  if (skip) return
  ;({dir, cleanup} = await tempDir('ml-peer-onnx-'))
  await mnistFolders(dir, 200, 20)
})
after(async () => {
  await cleanup?.()
})

const ml = async (args: string[]) => {
  const result = await runJson<Record<string, unknown>>(args)
  assert.equal(result.code, 0, `ml ${args.join(' ')}: ${JSON.stringify(result.json)}\n${result.stderr}`)
  return result.json
}

describe('exported ONNX and Triton models, checked by the onnx, onnxruntime and tritonclient Python packages', {skip}, () => {
  for (const preset of PRESETS) {
    it(`${preset}: plain, float16 and uint8 versions`, async () => {
      const config = await writeMnistConfig(dir, {name: preset, model: {preset}, train: {epochs: 1, runs: `runs-${preset}`}})
      await ml(['ingest', '--config', config])
      await ml(['train', '--config', config])
      const digits = await testDigits(dir, 2)
      const jobs: Array<{onnx: string; config: string; input: string; n: number}> = []
      const expected: Float32Array[] = []
      for (const [i, quantize] of QUANTIZE.entries()) {
        await ml(['export', '--config', config, '--format', 'tfjs,onnx,triton', '--quantize', quantize, '--version', String(i + 1)])
        const versionDir = path.join(dir, 'models', preset, String(i + 1))
        // What ml predicts for this version, in this process, and the preprocessed batch it used.
        const reference = await referencePredictions(versionDir, digits)
        const input = path.join(dir, `${preset}-${quantize}.f32`)
        const batch = new Float32Array(reference.floats.length * reference.floats[0]!.length)
        reference.floats.forEach((f, j) => batch.set(f, j * f.length))
        await writeFile(input, Buffer.from(batch.buffer))
        jobs.push({onnx: path.join(versionDir, 'model.onnx'), config: path.join(dir, 'models', preset, 'config.pbtxt'), input, n: digits.length})
        expected.push(reference.expected)
      }
      const jobFile = path.join(dir, `${preset}-jobs.json`)
      await writeFile(jobFile, JSON.stringify(jobs))
      const {results} = await runPython<{results: Checked[]}>('check_onnx.py', [jobFile])
      for (const [i, r] of results.entries()) {
        const label = `${preset} ${QUANTIZE[i]}`
        const diff = maxAbsDiff(Float32Array.from(r.probabilities), expected[i]!)
        assert.ok(diff <= 1e-4, `${label}: Python onnxruntime differs from ml by ${diff}`)
        assert.equal(r.inputs.length, 1, label)
        assert.equal(r.outputs.length, 1, label)
        const c = r.config!
        assert.equal(c.name, preset)
        assert.equal(c.platform, 'onnxruntime_onnx')
        assert.ok(c.max_batch_size > 0)
        // Triton's dims leave out the batch dimension, which the graph has first (dynamic).
        assert.deepEqual(c.input.map((t) => [t.name, t.data_type, t.dims.map(Number)]), r.inputs.map((t) => [t.name, `TYPE_${t.type === 'FLOAT' ? 'FP32' : t.type}`, t.dims.slice(1)]), label)
        assert.deepEqual(c.output.map((t) => [t.name, t.data_type, t.dims.map(Number)]), r.outputs.map((t) => [t.name, `TYPE_${t.type === 'FLOAT' ? 'FP32' : t.type}`, t.dims.slice(1)]), label)
        assert.equal(c.output[0]!.label_filename, 'labels.txt')
      }
    })
  }
})
