import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {runCli} from '../support/cli.js'

describe('ml with a command or flag it does not know', () => {
  it('a mistyped command gets "did you mean" and exit 2', async () => {
    const result = await runCli(['trian'])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /trian is not an ml command/)
    assert.match(result.stderr, /Did you mean `ml train`\?/)
  })

  it('under --json an unknown command prints the error object on stdout', async () => {
    const result = await runCli(['frobnicate', '--json'])
    assert.equal(result.code, 2)
    const json = JSON.parse(result.stdout) as {error: {code: string; exitCode: number; message: string}}
    assert.deepEqual([json.error.code, json.error.exitCode], ['COMMAND_NOT_FOUND', 2])
    assert.match(json.error.message, /frobnicate/)
  })

  it('--version --json prints JSON', async () => {
    const result = await runCli(['--version', '--json'])
    assert.equal(result.code, 0)
    const json = JSON.parse(result.stdout) as {name: string; package: string; version: string}
    assert.equal(json.name, 'ml')
    assert.match(json.version, /^\d+\.\d+\.\d+/)
    assert.equal(json.package, 'image-classifier-toolkit')
  })
})
