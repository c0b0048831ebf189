import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {compileErrors, validate} from '@readme/openapi-parser'
import {documentationGaps, examplePath, openApiDocument} from '../../../src/lib/serve/protocols/openapi.js'
import type {Route} from '../../../src/lib/serve/protocols/routes.js'
import {ROUTES} from '../../../src/lib/serve/server.js'

describe('/openapi.json', () => {
  it('documents every route of the tables, and nothing the tables do not answer', () => {
    assert.deepEqual(documentationGaps(ROUTES), {unrouted: [], undocumented: []})
  })

  it('names a route that gains no documentation, and an operation that loses its route', () => {
    const extra: Route = {protocol: 'other', pattern: /^\/v2\/new-thing$/, methods: ['GET'], handle: () => ({status: 200})}
    assert.deepEqual(documentationGaps([...ROUTES, extra]).undocumented, ['GET ^\\/v2\\/new-thing$'])
    const withoutPing = ROUTES.filter((r) => !r.pattern.test('/ping'))
    assert.deepEqual(documentationGaps(withoutPing).unrouted, ['GET /ping'])
  })

  it('is valid OpenAPI 3.1, with and without auth', async () => {
    for (const auth of [false, true]) {
      const doc = openApiDocument(ROUTES, {name: 'ml', version: '0.1.0'}, auth)
      assert.equal(doc.openapi, '3.1.0')
      const result = await validate(structuredClone(doc) as never)
      assert.ok(result.valid, result.valid ? '' : compileErrors(result))
    }
  })

  it('places each operation on the route that answers it: open routes need no token', () => {
    const doc = openApiDocument(ROUTES, {name: 'ml', version: '0.1.0'}, true) as {paths: Record<string, Record<string, {security?: unknown[]; parameters?: Array<{name: string}>}>>}
    for (const [path, ops] of Object.entries(doc.paths)) {
      const route = ROUTES.find((r) => r.pattern.test(examplePath(path)))!
      for (const [method, op] of Object.entries(ops)) {
        assert.ok(route.methods === undefined || route.methods.includes(method.toUpperCase()), `${method} ${path}`)
        assert.equal(op.security !== undefined, route.open === true, `${method} ${path}: security follows the route's open flag`)
        assert.deepEqual((op.parameters ?? []).filter((p) => path.includes(`{${p.name}}`)).map((p) => p.name), [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]))
      }
    }
    for (const path of ['/', '/openapi.json', '/v2/models/{model}/versions/{version}/infer', '/v1/models/{model}/labels/{label}:classify', '/invocations', '/metrics']) assert.ok(doc.paths[path], path)
  })
})
