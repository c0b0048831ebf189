// Triton's config.pbtxt parsed back with a small protobuf text-format parser (written here, so the
// test does not trust the writer's idea of the syntax) and checked field by field.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {tritonConfig, tritonLabels} from '../../../src/lib/export/triton.js'
import {UserError} from '../../../src/lib/errors.js'

type PbValue = string | number | PbMessage | PbValue[]
interface PbMessage {
  [field: string]: PbValue[]
}

/**
 * Protobuf text format: `field: scalar`, `field: [a, b]`, `field { ... }`, `field [ {...}, {...} ]`
 * and `field: { ... }`; enums stay identifiers, strings are unquoted. Every field maps to the list
 * of its values, as repeated fields and repeated occurrences are the same thing in text format.
 */
export function parseTextProto(text: string): PbMessage {
  const tokens = text.match(/"(?:[^"\\]|\\.)*"|#[^\n]*|[{}[\]:,]|[^\s{}[\]:,"#]+/g) ?? []
  let i = 0
  const scalar = (t: string): string | number => {
    if (t.startsWith('"')) return JSON.parse(t) as string
    if (/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(t)) return Number(t)
    return t
  }
  const value = (): PbValue => {
    const t = tokens[i++]!
    if (t === '{') return message('}')
    if (t === '[') {
      const items: PbValue[] = []
      while (tokens[i] !== ']') {
        items.push(value())
        if (tokens[i] === ',') i++
      }
      i++
      return items
    }
    return scalar(t)
  }
  const message = (end?: string): PbMessage => {
    const out: PbMessage = {}
    while (i < tokens.length && tokens[i] !== end) {
      const field = tokens[i++]!
      if (field.startsWith('#')) continue
      assert.match(field, /^[a-z_][a-z0-9_]*$/, `bad field name ${field}`)
      if (tokens[i] === ':') i++
      const v = value()
      out[field] = [...(out[field] ?? []), ...(Array.isArray(v) ? v : [v])]
      if (tokens[i] === ',' || tokens[i] === ';') i++
    }
    if (end) i++
    return out
  }
  const result = message()
  assert.equal(i, tokens.length, 'trailing tokens')
  return result
}

const one = (m: PbMessage, field: string) => {
  assert.equal(m[field]?.length, 1, `${field} should appear once`)
  return m[field]![0]!
}

describe('Triton config.pbtxt', () => {
  it('holds the ModelConfig fields Triton needs, with the batch dimension left out of dims', () => {
    const text = tritonConfig({
      name: 'digits',
      input: {name: 'image', dims: [28, 28, 1]},
      output: {name: 'probabilities', dims: [10]},
      settings: {maxBatchSize: 32, preferredBatchSize: [4, 16], maxQueueDelayMicroseconds: 250, instances: 2, kind: 'cpu'},
    })
    const config = parseTextProto(text)
    assert.deepEqual(Object.keys(config).sort(), ['dynamic_batching', 'input', 'instance_group', 'max_batch_size', 'name', 'output', 'platform'])
    assert.equal(one(config, 'name'), 'digits')
    assert.equal(one(config, 'platform'), 'onnxruntime_onnx')
    assert.equal(one(config, 'max_batch_size'), 32)
    const input = one(config, 'input') as PbMessage
    assert.deepEqual(input, {name: ['image'], data_type: ['TYPE_FP32'], format: ['FORMAT_NHWC'], dims: [28, 28, 1]})
    const output = one(config, 'output') as PbMessage
    assert.deepEqual(output, {name: ['probabilities'], data_type: ['TYPE_FP32'], dims: [10], label_filename: ['labels.txt']})
    assert.deepEqual(one(config, 'dynamic_batching'), {preferred_batch_size: [4, 16], max_queue_delay_microseconds: [250]})
    assert.deepEqual(config.instance_group, [{count: [2], kind: ['KIND_CPU']}])
  })

  it('defaults preferred_batch_size to max_batch_size, writes KIND_GPU, refuses a preferred size above the maximum', () => {
    const base = {name: 'm', input: {name: 'image', dims: [8, 8, 3]}, output: {name: 'probabilities', dims: [2]}}
    const config = parseTextProto(tritonConfig({...base, settings: {maxBatchSize: 8, maxQueueDelayMicroseconds: 0, instances: 1, kind: 'gpu'}}))
    assert.deepEqual((one(config, 'dynamic_batching') as PbMessage).preferred_batch_size, [8])
    assert.deepEqual(config.instance_group, [{count: [1], kind: ['KIND_GPU']}])
    assert.throws(
      () => tritonConfig({...base, settings: {maxBatchSize: 8, preferredBatchSize: [16], maxQueueDelayMicroseconds: 0, instances: 1, kind: 'cpu'}}),
      (error: unknown) => error instanceof UserError && /16 exceeds maxBatchSize 8/.test(error.message),
    )
  })

  it('the parser reads the other spellings of text format', () => {
    assert.deepEqual(parseTextProto('a: 1 a: 2 b { c: "x\\"y" } d: [ {e: E1}, {e: E2} ] # note\nf: {g: -1.5}'), {
      a: [1, 2],
      b: [{c: ['x"y']}],
      d: [{e: ['E1']}, {e: ['E2']}],
      f: [{g: [-1.5]}],
    })
  })
})

describe('labels.txt', () => {
  it('holds one label per line in output order and refuses labels with line breaks', () => {
    assert.equal(tritonLabels(['0', 'cat', 'dog house']), '0\ncat\ndog house\n')
    assert.throws(() => tritonLabels(['a\nb']), UserError)
  })
})
