import assert from 'node:assert/strict'
import {Writable} from 'node:stream'
import {describe, it} from 'node:test'
import {barLayout, createProgress} from '../../../src/lib/ui/progress.js'
import {backendNotice, epochLine, trainProgress} from '../../../src/lib/ui/train-progress.js'

/** A stand-in for a terminal's stderr, `columns` wide. */
function terminal(columns: number): NodeJS.WriteStream & {text: () => string} {
  let text = ''
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += chunk.toString()
      done()
    },
  }) as unknown as NodeJS.WriteStream & {text: () => string}
  Object.assign(stream, {isTTY: true, columns, rows: 24, cursorTo: (_x: number, _y?: unknown, cb?: () => void) => (cb?.(), true), clearLine: (_d: number, cb?: () => void) => (cb?.(), true), moveCursor: (_x: number, _y: number, cb?: () => void) => (cb?.(), true), text: () => text})
  return stream
}

const wasmNotes = [
  '@tensorflow/tfjs-node-gpu is not installed.',
  '@tensorflow/tfjs-node is not installed.',
  'Using the wasm backend; for native speed: npm install @tensorflow/tfjs-node (or @tensorflow/tfjs-node-gpu on a Linux machine with CUDA).',
  'The wasm backend runs on a single thread in Node.js.',
]

describe('training progress', () => {
  it('the backend notice is one line that says how to add tfjs-node for local, global and npx installs', () => {
    const lines = backendNotice('wasm', wasmNotes)
    assert.equal(lines.length, 1)
    assert.match(lines[0]!, /npm i @tensorflow\/tfjs-node/)
    assert.match(lines[0]!, /-g/)
    assert.match(lines[0]!, /npx -p image-classifier-toolkit -p @tensorflow\/tfjs-node ml train/)
    // Anything unusual is kept.
    assert.deepEqual(backendNotice('wasm', [...wasmNotes, '@tensorflow/tfjs-node failed to load: bad ELF']).slice(1), ['@tensorflow/tfjs-node failed to load: bad ELF'])
    assert.deepEqual(backendNotice('tensorflow', []), [])
  })

  it('epoch lines fit an 80-column terminal', () => {
    const line = epochLine({epoch: 100, loss: 0.1234, accuracy: 0.9876, valLoss: 0.1234, valAccuracy: 0.9746, imagesPerSec: 12345, seconds: 1234.5, at: ''}, 100)
    assert.ok(line.length <= 80, `${line.length} columns: ${line}`)
  })

  it('the step bar leaves room for its status on an 80-column terminal', () => {
    const status = 'loss 0.0000 acc 0.0000'.length
    const {barsize, fixedWidth} = barLayout('epoch 100/100', 'step', 80, status)
    assert.ok(barsize >= 4)
    assert.ok(fixedWidth + barsize < 80, `${fixedWidth} + ${barsize}`)
    const stream = terminal(80)
    const p = createProgress({label: 'epoch 100/100', unit: 'step', total: 99999, enabled: true, stream, statusWidth: status})
    p.update(99999, 'loss 0.1234 acc 0.9876')
    p.stop()
    const drawn = stream.text().split(/\r|\n|\u001b\[[0-9;?]*[A-Za-z]/).filter((l) => l.trim())
    assert.ok(drawn.some((l) => l.includes('acc 0.9876')), `the status was cut: ${JSON.stringify(drawn)}`)
    for (const l of drawn) assert.ok(l.length <= 80, `${l.length} columns: ${l}`)
  })

  it('a bar with nothing to count yet draws nothing (no "100% 0/0")', () => {
    const stream = terminal(80)
    const p = createProgress({label: 'ingest', unit: 'img', enabled: true, stream})
    p.update(0)
    assert.doesNotMatch(stream.text(), /0\/0/)
    p.update(5, undefined, 10)
    assert.match(stream.text(), /\d\/10/)
    p.stop()
  })

  it('under --json the lines are kept and the bar is not drawn; --quiet drops everything', () => {
    for (const quiet of [false, true]) {
      const lines: string[] = []
      const stream = terminal(80)
      const p = trainProgress({line: (l) => lines.push(l), bar: false, quiet, stream})
      p.onEvent({type: 'start', runId: 'r', runDir: 'd', backend: 'wasm', notes: wasmNotes, params: 1000, trainCount: 10, validationCount: 2, epochs: 1, startEpoch: 0, steps: 2, resumed: false, workers: 1})
      p.onEvent({type: 'step', epoch: 0, step: 0, steps: 2, loss: 1, accuracy: 0.5, imagesPerSec: 10})
      p.onEvent({type: 'epoch', metrics: {epoch: 1, loss: 1, accuracy: 0.5, imagesPerSec: 10, seconds: 1, at: ''}, epochs: 1})
      p.stop()
      assert.equal(stream.text(), '')
      if (quiet) assert.deepEqual(lines, [])
      else {
        assert.equal(lines.length, 4, lines.join('\n'))
        assert.match(lines.at(-1)!, /^epoch 1\/1 /)
      }
    }
  })
})
