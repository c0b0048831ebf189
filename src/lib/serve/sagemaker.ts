// SageMaker's inference container contract (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html):
// GET /ping answers 200 once a model is ready (SageMaker's health check, sent without credentials),
// POST /invocations runs the model. /invocations names no model: it is ML_SAGEMAKER_MODEL (set by
// `ml export --to sagemaker`), else the repository's only model. An image body (image/*) is
// classified like TF Serving's :classify with a raw image; a JSON body is a TF Serving :predict request.
import type {Reply, RequestState, ServeContext} from './context.js'
import {HttpError} from './http-error.js'
import * as tfserving from './tfserving.js'

export const SAGEMAKER_PING = '/ping'
export const SAGEMAKER_INVOCATIONS = '/invocations'

/** GET /ping: 200 when serving, 503 (SageMaker keeps waiting, then replaces the instance) otherwise. */
export function ping(ready: boolean): Reply {
  return ready ? {status: 200, body: {status: 'ready'}} : {status: 503, body: {error: 'not ready'}}
}

function modelName(ctx: ServeContext, env: NodeJS.ProcessEnv): string {
  if (env.ML_SAGEMAKER_MODEL) return env.ML_SAGEMAKER_MODEL
  const names = [...ctx.repository.models.keys()]
  if (names.length === 1) return names[0]!
  throw new HttpError(400, `/invocations needs one model: the repository holds ${names.length} (${names.join(', ')}); set ML_SAGEMAKER_MODEL`)
}

/** POST /invocations with the request's body and media type. */
export async function invoke(ctx: ServeContext, state: RequestState, body: Buffer, mediaType: string, image: boolean, query: URLSearchParams, env: NodeJS.ProcessEnv = process.env): Promise<Reply> {
  const model = modelName(ctx, env)
  state.inference = true
  state.model = model
  if (image) {
    state.protocol = 'raw'
    return tfserving.classifyRaw(ctx, state, model, {}, body, query)
  }
  if (mediaType !== '' && !/^application\/json$/i.test(mediaType)) {
    throw new HttpError(415, `Content-Type ${mediaType} is not accepted by /invocations; send an image (image/*) or a TF Serving predict request (application/json)`)
  }
  state.protocol = 'tfserving'
  return tfserving.predict(ctx, state, model, {}, body)
}
