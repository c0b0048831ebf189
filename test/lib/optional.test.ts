import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {hasOptional, importOptional, isMissingPackage, OPTIONAL_PACKAGES} from '../../src/lib/optional.js'
import {UserError} from '../../src/lib/errors.js'

describe('optional packages', () => {
  it('a missing optional package is a DEPENDENCY_MISSING error that says what to install', async () => {
    const missing = Object.assign(new Error("Cannot find package 'onnxruntime-node' imported from /x/y.js"), {code: 'ERR_MODULE_NOT_FOUND'})
    await assert.rejects(
      importOptional('onnxruntime-node', () => Promise.reject(missing)),
      (error: unknown) => {
        assert.ok(error instanceof UserError)
        assert.equal(error.code, 'DEPENDENCY_MISSING')
        assert.equal(error.exitCode, 2)
        assert.match(error.message, /onnxruntime-node/)
        assert.ok(error.suggestions.some((s) => s.includes('npm install onnxruntime-node')))
        assert.ok(error.suggestions.some((s) => s.includes('npx --package image-classifier-toolkit --package onnxruntime-node ml')))
        assert.ok(error.suggestions.some((s) => s.includes('ONNXRUNTIME_NODE_INSTALL=skip')))
        return true
      },
    )
  })

  it('a package the optional one fails to find itself is not mistaken for it', async () => {
    const inner = Object.assign(new Error("Cannot find package 'onnxruntime-common' imported from /x/onnxruntime-node/index.js"), {code: 'ERR_MODULE_NOT_FOUND'})
    await assert.rejects(importOptional('onnxruntime-node', () => Promise.reject(inner)), (error) => error === inner)
    assert.equal(isMissingPackage(inner, 'onnxruntime-node'), false)
  })

  it('a real failed import is recognised', async () => {
    const name = 'no-such-package-for-ml-tests'
    const error = await import(name).catch((e: unknown) => e)
    assert.equal(isMissingPackage(error, name), true)
  })

  it('the development checkout has every optional package installed', () => {
    for (const name of Object.keys(OPTIONAL_PACKAGES) as Array<keyof typeof OPTIONAL_PACKAGES>) assert.equal(hasOptional(name), true, name)
  })
})
