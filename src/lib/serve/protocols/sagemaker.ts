// SageMaker's inference container contract (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html):
// GET /ping answers 200 once a model is ready (SageMaker's health check, sent without credentials),
// POST /invocations runs the model. /invocations names no model: it is ML_SAGEMAKER_MODEL (set by
// `ml export --to sagemaker`), else the repository's only model. An image body (image/*) is
// classified like TF Serving's :classify with a raw image; a JSON body is a TF Serving :predict request.
import type {ServeContext} from '../context.js'
import {HttpError} from '../http-error.js'
import {IMAGE_TYPES, mediaType} from './http.js'
import type {Route} from './routes.js'
import {classifyRaw, predict} from './tfserving.js'

export const SAGEMAKER_PING = '/ping'
export const SAGEMAKER_INVOCATIONS = '/invocations'

function modelName(ctx: ServeContext, env: NodeJS.ProcessEnv): string {
  if (env.ML_SAGEMAKER_MODEL) return env.ML_SAGEMAKER_MODEL
  const names = [...ctx.repository.models.keys()]
  if (names.length === 1) return names[0]!
  throw new HttpError(400, `/invocations needs one model: the repository holds ${names.length} (${names.join(', ')}); set ML_SAGEMAKER_MODEL`)
}

export const sagemakerRoutes: readonly Route[] = [
  {
    protocol: 'health',
    pattern: /^\/ping$/,
    methods: ['GET'],
    open: true,
    // 200 when serving, 503 (SageMaker keeps waiting, then replaces the instance) otherwise.
    handle: (ctx) => (!ctx.draining() && ctx.repository.ready() ? {status: 200, body: {status: 'ready'}} : {status: 503, body: {error: 'not ready'}}),
  },
  {
    protocol: 'tfserving',
    pattern: /^\/invocations$/,
    methods: ['POST'],
    handle: async (ctx, state, {req, query, body}) => {
      const model = modelName(ctx, process.env)
      state.inference = true
      state.model = model
      const type = mediaType(req)
      if (IMAGE_TYPES.test(type)) {
        state.protocol = 'raw'
        return classifyRaw(ctx, state, model, {}, await body({model, selector: {}}), query())
      }
      if (type !== '' && !/^application\/json$/i.test(type)) {
        throw new HttpError(415, `Content-Type ${type} is not accepted by /invocations; send an image (image/*) or a TF Serving predict request (application/json)`)
      }
      return predict(ctx, state, model, {}, await body({model, selector: {}}))
    },
  },
]
