import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {validateConfig} from '../../../src/lib/config/load.js'
import {UserError} from '../../../src/lib/errors.js'

const minimal = {data: {sources: [{type: 'folder', path: './images'}]}}

function issuesOf(input: unknown): Array<{path: string; message: string}> {
  try {
    validateConfig(input, 'ml.yaml')
  } catch (error) {
    assert.ok(error instanceof UserError, 'expected a UserError')
    assert.equal(error.exitCode, 2)
    return (error.details as {issues: Array<{path: string; message: string}>}).issues
  }
  assert.fail('config was accepted')
}

describe('config validation', () => {
  it('fills defaults for a minimal config', () => {
    const config = validateConfig(minimal)
    assert.equal(config.train.batchSize, 128)
    assert.equal(config.model.preset, 'cnn-small')
    assert.deepEqual(config.data.image, {width: 28, height: 28, channels: 1, fit: 'fill'})
  })

  it('names the key, what was expected and what it got', () => {
    const issues = issuesOf({...minimal, train: {batchSize: 'abc'}})
    assert.deepEqual(issues, [{path: 'train.batchSize', message: 'expected a positive integer, got "abc"'}])
  })

  it('reports unknown keys (typos) with their path', () => {
    const issues = issuesOf({...minimal, train: {epoch: 3}})
    assert.deepEqual(issues.map((i) => i.path), ['train.epoch'])
    assert.match(issues[0]!.message, /unknown key/)
  })

  it('lists every problem at once', () => {
    const issues = issuesOf({data: {sources: [{type: 'folder'}], split: {validation: 2}}, train: {epochs: 0}})
    const paths = issues.map((i) => i.path).sort()
    assert.deepEqual(paths, ['data.sources.0.path', 'data.split.validation', 'train.epochs'])
  })

  it('rejects an unknown source type', () => {
    const issues = issuesOf({data: {sources: [{type: 'ftp', path: 'x'}]}})
    assert.equal(issues.length, 1)
    assert.equal(issues[0]!.path, 'data.sources.0.type')
    assert.match(issues[0]!.message, /"ftp"/)
  })

  it('rejects preset and layers together', () => {
    const issues = issuesOf({...minimal, model: {preset: 'mlp', layers: [{type: 'dense', units: 10}]}})
    assert.equal(issues.length, 1)
    assert.match(issues[0]!.message, /either preset or layers/)
  })
})
