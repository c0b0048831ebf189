import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {parseConfigText, validateConfig} from '../../../src/lib/config/load.js'
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

describe('config errors that guess', () => {
  const issuesOf = (input: unknown) => {
    try {
      validateConfig(input)
    } catch (error) {
      return ((error as UserError).details as {issues: Array<{path: string; message: string}>}).issues
    }
    return []
  }

  it('an unknown key says which key was meant, at any depth', () => {
    const issues = issuesOf({data: {sources: [{type: 'folder', path: 'x', lable: 'a'}], image: {widht: 32}}, train: {epoch: 3}, modle: {}})
    const byPath = Object.fromEntries(issues.map((i) => [i.path, i.message]))
    assert.match(byPath['data.image.widht']!, /did you mean `data\.image\.width`\?/)
    assert.match(byPath['train.epoch']!, /did you mean `train\.epochs`\?/)
    assert.match(byPath['modle']!, /did you mean `model`\?/)
    assert.match(byPath['data.sources.0.lable']!, /did you mean `data\.sources\.0\.label`\?/)
  })

  it('a key like none of the known ones gets no guess', () => {
    const [issue] = issuesOf({data: {sources: [{type: 'folder', path: 'x'}]}, train: {frobnicate: 1}})
    assert.equal(issue!.path, 'train.frobnicate')
    assert.doesNotMatch(issue!.message, /did you mean/)
  })

  it('a YAML syntax error shows the line, a caret under the column, and no dangling colon', () => {
    const error = (() => {
      try {
        parseConfigText('data:\n  sources: []\n  image: width: 32\n', 'ml.yaml')
      } catch (e) {
        return e as UserError
      }
    })()
    assert.ok(error instanceof UserError)
    assert.equal(error.code, 'CONFIG_YAML')
    assert.match(error.message, /line 3, column 10: Nested mappings are not allowed in compact mappings\n/)
    assert.doesNotMatch(error.message, /compact mappings:/)
    assert.match(error.message, /\n {4} {2}image: width: 32\n {4} {9}\^/)
  })
})
