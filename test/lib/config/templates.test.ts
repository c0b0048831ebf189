import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {describe, it} from 'node:test'
import {parseConfigText, validateConfig} from '../../../src/lib/config/load.js'
import {TEMPLATES} from '../../../src/lib/config/templates.js'
import {ROOT} from '../../support/cli.js'

describe('ml init templates', () => {
  it('every template is a valid config', () => {
    for (const [name, text] of Object.entries(TEMPLATES)) validateConfig(parseConfigText(text, name), name)
  })

  it('mnist trains as the quickstart does, whose run must reach 0.97 test accuracy', async () => {
    const template = validateConfig(parseConfigText(TEMPLATES.mnist, 'mnist'))
    const quickstart = validateConfig(parseConfigText(await readFile(path.join(ROOT, 'configs', 'quickstart.yaml'), 'utf8'), 'quickstart'))
    const {runs: _a, ...templateTrain} = template.train
    const {runs: _b, ...quickstartTrain} = quickstart.train
    assert.deepEqual(templateTrain, quickstartTrain)
    assert.deepEqual(template.model, quickstart.model)
    assert.deepEqual(template.data.split, quickstart.data.split)
    assert.deepEqual(template.data.image, quickstart.data.image)
  })

  it('folder starts from what trains in minutes on a laptop: cnn-small on small images', () => {
    const config = validateConfig(parseConfigText(TEMPLATES.folder, 'folder'))
    assert.equal(config.model.preset, 'cnn-small')
    assert.ok(config.data.image.width * config.data.image.height <= 32 * 32, `${config.data.image.width}x${config.data.image.height}`)
    assert.ok(config.train.epochs <= 10)
  })
})
