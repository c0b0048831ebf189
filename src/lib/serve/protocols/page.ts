// The routes for people: GET / (a page to try the model) and GET /openapi.json (every endpoint,
// from the route tables). Both are open with auth on: they name no model and hold no data; the
// page asks for the token and sends it with the API calls it makes.
import {PAGE_CSP, PAGE_HTML} from '../page/page.js'
import {openApiDocument} from './openapi.js'
import type {Route} from './routes.js'

/** `all`: every route of the server (this table included), read when the document is asked for. */
export function pageRoutes(all: () => readonly Route[]): Route[] {
  // Built once per server (its name, version and auth setting), on first request.
  const documents = new WeakMap<object, string>()
  return [
    {
      protocol: 'other',
      pattern: /^\/$/,
      methods: ['GET'],
      open: true,
      handle: () => ({
        status: 200,
        body: PAGE_HTML,
        contentType: 'text/html; charset=utf-8',
        headers: {'Content-Security-Policy': PAGE_CSP, 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer', 'Cache-Control': 'no-cache'},
      }),
    },
    {
      protocol: 'other',
      pattern: /^\/openapi\.json$/,
      methods: ['GET'],
      open: true,
      handle: (ctx) => {
        let document = documents.get(ctx.options)
        if (document === undefined) {
          document = JSON.stringify(openApiDocument(all(), ctx.server, ctx.options.auth !== undefined), null, 2)
          documents.set(ctx.options, document)
        }
        return {status: 200, body: document, contentType: 'application/json'}
      },
    },
  ]
}
