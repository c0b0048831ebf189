// Routes for the people and systems that run the server: liveness and readiness (open, since probes
// carry no tokens) and the Prometheus /metrics scrape.
import {unavailable} from '../http-error.js'
import type {Route} from './routes.js'

export const operationsRoutes: readonly Route[] = [
  {protocol: 'health', pattern: /^\/(healthz|livez)$/, methods: ['GET'], open: true, handle: () => ({status: 200, body: {status: 'ok'}})},
  {
    protocol: 'health',
    pattern: /^\/readyz$/,
    methods: ['GET'],
    open: true,
    handle: (ctx) => {
      if (ctx.draining()) throw unavailable('not ready: shutting down')
      if (!ctx.repository.ready()) throw unavailable('not ready: a served model has no available version')
      return {status: 200, body: {status: 'ready'}}
    },
  },
  {
    protocol: 'metrics',
    pattern: /^\/metrics$/,
    methods: ['GET'],
    handle: async (ctx) => ({status: 200, body: await ctx.metricsText(), contentType: ctx.metricsContentType}),
  },
]
