// What `ml predict` reads: globs (expanded here when the shell did not), lists of paths (@file and
// --list), CSV files with a column of paths (relative to the CSV), and the rows it writes.
import assert from 'node:assert/strict'
import {mkdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {PassThrough} from 'node:stream'
import {after, before, describe, it} from 'node:test'
import {parse} from 'csv-parse/sync'
import sharp from 'sharp'
import {collectInputs} from '../../../src/lib/predict/files.js'
import {csvHeader, formatOfFile, openRowWriter, rowWriter} from '../../../src/lib/predict/output.js'
import {predictFiles} from '../../../src/lib/predict/run.js'
import type {Predictor} from '../../../src/lib/serve/predictor.js'
import {isUserError} from '../../../src/lib/errors.js'
import {tempDir} from '../../support/fixtures.js'

describe('ml predict inputs and rows', () => {
  let dir: string
  let cleanup: () => Promise<void>

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-predict-inputs-'))
    for (const f of ['a/1.png', 'a/2.jpg', 'a/deep/3.png', 'b/4.PNG', 'b/notes.txt', 'b/.hidden.png']) {
      await mkdir(path.dirname(path.join(dir, f)), {recursive: true})
      await writeFile(path.join(dir, f), 'x')
    }
  })
  after(() => cleanup())

  it('expands unexpanded glob patterns into images, sorted; a pattern with no match is reported', async () => {
    const inputs = await collectInputs([path.join(dir, 'a', '**', '*.png'), path.join(dir, 'b', '*'), path.join(dir, 'c', '*.png')])
    assert.deepEqual(inputs.files, [path.join(dir, 'a', '1.png'), path.join(dir, 'a', 'deep', '3.png'), path.join(dir, 'b', '4.PNG')])
    assert.deepEqual(inputs.emptyPatterns, [path.join(dir, 'c', '*.png')])
  })

  it('a file whose name looks like a pattern is taken as that file', async () => {
    const odd = path.join(dir, 'odd[1].png')
    await writeFile(odd, 'x')
    assert.deepEqual((await collectInputs([odd])).files, [odd])
  })

  it('reads @lists and --list files, relative paths against the list\'s folder, skipping blanks and comments', async () => {
    const list = path.join(dir, 'a', 'paths.txt')
    await writeFile(list, `1.png\r\n\n# a comment\n  deep/3.png  \n${path.join(dir, 'b', '4.PNG')}\nmissing.png\n`)
    const expected = [path.join(dir, 'a', '1.png'), path.join(dir, 'a', 'deep', '3.png'), path.join(dir, 'b', '4.PNG'), path.join(dir, 'a', 'missing.png')]
    assert.deepEqual((await collectInputs([`@${list}`])).files, expected)
    assert.deepEqual((await collectInputs([], {lists: [list]})).files, expected)
    await assert.rejects(collectInputs([], {lists: [path.join(dir, 'nope.txt')]}), (e) => isUserError(e) && e.code === 'PREDICT_LIST_UNREADABLE' && e.message.includes('nope.txt'))
  })

  it('reads a CSV column of paths (quoted cells, BOM, relative to the CSV); an empty cell is an error row; a wrong column names the columns', async () => {
    const csv = path.join(dir, 'b', 'images.csv')
    await writeFile(csv, '\uFEFFid,"image path",note\n1,4.PNG,"a, b"\n2,../a/1.png,x\n3,,empty\n')
    const inputs = await collectInputs([], {csv: {files: [csv], column: 'image path'}})
    assert.deepEqual(inputs.files, [path.join(dir, 'b', '4.PNG'), path.join(dir, 'a', '1.png'), {file: `${csv}#3`, error: `${csv} row 3: no path in column "image path"`}])
    await assert.rejects(collectInputs([], {csv: {files: [csv], column: 'path'}}), (e) => isUserError(e) && e.code === 'PREDICT_CSV_COLUMN' && e.message.includes('id, image path, note'))
    const broken = path.join(dir, 'broken.csv')
    await writeFile(broken, 'path\n"unterminated\n')
    await assert.rejects(collectInputs([], {csv: {files: [broken], column: 'path'}}), (e) => isUserError(e) && e.code === 'PREDICT_CSV_INVALID')
  })

  it('writes JSON Lines and CSV rows (errors included) that parse back', async () => {
    assert.deepEqual([formatOfFile('x.CSV'), formatOfFile('x.jsonl'), formatOfFile('x.txt')], ['csv', 'jsonl', undefined])
    const ok = {file: 'a "quoted", name.png', top: [{label: '7', index: 7, score: 0.9}, {label: '1', index: 1, score: 0.05}]}
    const bad = {file: 'b.png', error: 'b.png: not a recognised image format'}
    const jsonl = new PassThrough()
    const jw = rowWriter(jsonl, 'jsonl', 2, false)
    await jw.write(ok)
    await jw.write(bad)
    await jw.close()
    const lines = (jsonl.read() as Buffer).toString().trim().split('\n').map((l) => JSON.parse(l) as unknown)
    assert.deepEqual(lines, [{file: ok.file, label: '7', score: 0.9, top: [{label: '7', score: 0.9}, {label: '1', score: 0.05}]}, bad])
    const csv = new PassThrough()
    const cw = rowWriter(csv, 'csv', 2, false)
    await cw.write(ok)
    await cw.write(bad)
    await cw.close()
    const rows = parse((csv.read() as Buffer).toString()) as string[][]
    assert.deepEqual(rows, [csvHeader(2), [ok.file, '7', '0.9', '1', '0.05', ''], ['b.png', '', '', '', '', bad.error]])
    assert.equal(cw.rows, 2)
  })

  it('streams: the rows of a batch are in the output file before the next batch runs, and a crash later leaves them there', async () => {
    const files: string[] = []
    for (let i = 0; i < 7; i++) {
      const file = path.join(dir, `digit-${i}.png`)
      await sharp(Buffer.alloc(28 * 28, i * 30), {raw: {width: 28, height: 28, channels: 1}}).png().toFile(file)
      files.push(file)
    }
    const out = path.join(dir, 'stream.jsonl')
    const writer = await openRowWriter(out, 'jsonl', 1)
    const seenBeforeBatch: number[] = []
    let calls = 0
    // A stand-in engine: class 1 when the image is bright; on its third batch it fails (an engine crash).
    const predictor = {
      inputShape: [28, 28, 1],
      preprocessing: {width: 28, height: 28, channels: 1, scale: 1 / 255, offset: 0},
      labels: ['dark', 'bright'],
      async predictBatch(input: Float32Array, n: number) {
        seenBeforeBatch.push((await readFile(out, 'utf8')).split('\n').filter(Boolean).length)
        if (++calls === 3) throw new Error('engine crashed')
        return Float32Array.from({length: n * 2}, (_, j) => (j % 2 === 1 ? input[Math.floor(j / 2) * 784]! : 1 - input[Math.floor(j / 2) * 784]!))
      },
      topK(p: Float32Array, row: number) {
        return p[row * 2 + 1]! > p[row * 2]! ? [{label: 'bright', index: 1, score: p[row * 2 + 1]!}] : [{label: 'dark', index: 0, score: p[row * 2]!}]
      },
    } as unknown as Predictor
    await assert.rejects(predictFiles({predictor, files, topK: 1, batchSize: 3, collect: false, onResult: (r) => writer.write(r), onBatch: () => writer.flush()}), /engine crashed/)
    await writer.close()
    assert.deepEqual(seenBeforeBatch, [0, 3, 6])
    const rows = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as {file: string; label: string})
    assert.deepEqual(rows.map((r) => [path.basename(r.file), r.label]), [0, 1, 2, 3, 4, 5].map((i) => [`digit-${i}.png`, i * 30 > 127 ? 'bright' : 'dark']))
  })
})
