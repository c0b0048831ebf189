import assert from 'node:assert/strict'
import {mkdir, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {classesNamedBySources, singleClassWarning} from '../../../src/lib/config/classes.js'
import {loadConfig} from '../../../src/lib/config/load.js'
import {runCli} from '../../support/cli.js'
import {tempDir} from '../../support/fixtures.js'

describe('classes named by the sources', () => {
  let dir: string
  let cleanup: () => Promise<void>

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-classes-'))
    await mkdir(path.join(dir, 'one', 'cats'), {recursive: true})
    await mkdir(path.join(dir, 'two', 'cats'), {recursive: true})
    await mkdir(path.join(dir, 'two', 'dogs'), {recursive: true})
    await mkdir(path.join(dir, 'two', '.thumbnails'), {recursive: true})
    await writeFile(path.join(dir, 'one.yaml'), 'data:\n  sources: [{type: folder, path: one}]\n')
    await writeFile(path.join(dir, 'two.yaml'), 'data:\n  sources: [{type: folder, path: two}]\n')
  })
  after(() => cleanup())

  it('lists the sub-folders, hidden ones aside', async () => {
    assert.deepEqual(await classesNamedBySources(await loadConfig(path.join(dir, 'two.yaml'))), ['cats', 'dogs'])
    assert.equal(await singleClassWarning(await loadConfig(path.join(dir, 'two.yaml'))), undefined)
  })

  it('ml ingest warns at once when the sources hold a single class', async () => {
    assert.match((await singleClassWarning(await loadConfig(path.join(dir, 'one.yaml'))))!, /one class only \(cats\)/)
    const result = await runCli(['ingest', '--config', path.join(dir, 'one.yaml'), '--json'])
    assert.match(result.stderr, /warning: data\.sources hold one class only \(cats\)/)
  })
})
