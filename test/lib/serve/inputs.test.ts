import assert from 'node:assert/strict'
import {PassThrough} from 'node:stream'
import {describe, it} from 'node:test'
import {jsonDepthOver} from '../../../src/lib/serve/inputs.js'
import {JsonLog} from '../../../src/lib/serve/log.js'

const bytes = (text: string) => Buffer.from(text, 'utf8')

describe('jsonDepthOver', () => {
  it('passes a flat tensor with few brackets, and counts depth, not brackets, when there are many', () => {
    const flat = JSON.stringify({inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', data: Array.from({length: 784}, (_, i) => i / 784)}]})
    assert.equal(jsonDepthOver(bytes(flat), 5), false)
    assert.equal(jsonDepthOver(bytes(flat), 4), false)
    assert.equal(jsonDepthOver(bytes(flat), 3), true)
    // 28 x 28 nested rows: over 800 brackets, depth 6.
    const nested = JSON.stringify({instances: [Array.from({length: 28}, () => Array.from({length: 28}, () => [0.5]))]})
    assert.equal(jsonDepthOver(bytes(nested), 5), false)
    assert.equal(jsonDepthOver(bytes(nested), 4), true)
  })

  it('finds depth past the limit whether the brackets are few or many', () => {
    assert.equal(jsonDepthOver(bytes('[[[[1]]]]'), 3), true)
    assert.equal(jsonDepthOver(bytes('[[[[1]]]]'), 4), false)
    const deep = '['.repeat(40) + ']'.repeat(40)
    assert.equal(jsonDepthOver(bytes(deep), 32), true)
    // Brackets inside strings do not nest.
    assert.equal(jsonDepthOver(bytes(JSON.stringify({a: '[[[[[[{{{{{{'})), 1), false)
    assert.equal(jsonDepthOver(bytes(JSON.stringify({a: '\\"[[[[', b: [[1]]})), 3), false)
    assert.equal(jsonDepthOver(bytes(JSON.stringify({a: '\\"[[[[', b: [[1]]})), 2), true)
  })
})

describe('JsonLog batched', () => {
  it('writes the lines of one turn of the event loop in one write, in order, and flushes on demand', async () => {
    const stream = new PassThrough()
    const writes: string[] = []
    stream.on('data', (chunk: Buffer) => writes.push(chunk.toString('utf8')))
    const log = new JsonLog(stream, {pid: 1}, true)
    log.write({n: 1})
    log.write({n: 2})
    log.write({n: 3})
    assert.equal(writes.length, 0)
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(writes.length, 1)
    const lines = writes[0]!.trimEnd().split('\n').map((line) => JSON.parse(line) as {n: number; pid: number; time: string})
    assert.deepEqual(lines.map((l) => l.n), [1, 2, 3])
    assert.ok(lines.every((l) => l.pid === 1 && !Number.isNaN(Date.parse(l.time))))
    log.write({n: 4})
    log.flush()
    assert.equal(JSON.parse(writes[1]!).n, 4)
    // Nothing is left to write: a later turn adds no empty write.
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(writes.length, 2)
  })
})
