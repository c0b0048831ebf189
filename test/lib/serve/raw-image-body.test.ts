import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {HttpError} from '../../../src/lib/serve/http-error.js'
import {parseJson} from '../../../src/lib/serve/inputs.js'

describe('a raw image posted as JSON (no Content-Type)', () => {
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13])
  const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16])

  for (const [name, body, type] of [['PNG', png, 'image/png'], ['JPEG', jpeg, 'image/jpeg']] as const) {
    it(`${name}: a 400 that says to send it with Content-Type ${type}`, () => {
      assert.throws(
        () => parseJson(body, 32),
        (error: unknown) => error instanceof HttpError && error.status === 400 && error.message.includes(`a ${name} image, not JSON`) && error.message.includes(`Content-Type: ${type}`) && !/Unexpected token/.test(error.message),
      )
    })
  }

  it('other bad JSON is still "malformed JSON"', () => {
    assert.throws(() => parseJson(Buffer.from('{"instances": ['), 32), /malformed JSON/)
  })
})
