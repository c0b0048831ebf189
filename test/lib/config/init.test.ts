import assert from 'node:assert/strict'
import {access, readFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {writeStarter} from '../../../src/lib/config/init.js'
import {TEMPLATES} from '../../../src/lib/config/templates.js'
import {tempDir} from '../../support/fixtures.js'

describe('ml init', () => {
  let dir: string
  let cleanup: () => Promise<void>
  before(async () => ({dir, cleanup} = await tempDir('ml-init-')))
  after(() => cleanup())

  it('writes the template, then refuses to overwrite it without force', async () => {
    const file = path.join(dir, 'ml.yaml')
    const lines: string[] = []
    const result = await writeStarter({file, template: 'folder', say: (l) => lines.push(l)})
    assert.equal(result.config, file)
    assert.equal(await readFile(file, 'utf8'), TEMPLATES.folder)
    assert.match(lines.join('\n'), /next: `ml config validate`/)
    await assert.rejects(writeStarter({file, template: 'mnist'}), /already exists/)
    await writeStarter({file, template: 'mnist', force: true})
    assert.equal(await readFile(file, 'utf8'), TEMPLATES.mnist)
  })

  it('--with-data with another template fails before writing anything', async () => {
    const file = path.join(dir, 'other.yaml')
    await assert.rejects(writeStarter({file, template: 'folder', withData: {train: 10, test: 10}}), /--with-data works with --template mnist/)
    await assert.rejects(access(file))
  })
})
