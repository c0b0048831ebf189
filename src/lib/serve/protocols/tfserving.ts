// TensorFlow Serving REST protocol: model status and metadata, :predict (row "instances" or columnar
// "inputs", with {"b64": ...} images) and :classify (JSON examples, or a raw image body for curl).
import {json, runModel, useVersion, type Reply, type RequestState, type ServeContext} from '../context.js'
import {badRequest, HttpError, notFound} from '../http-error.js'
import {checkBatch, decodeBase64, fillNumbers, imagesToInput, inputSize, isObject, parseJson, shapeText, topScores} from '../inputs.js'
import type {ModelVersion, VersionSelector} from '../repository.js'
import {IMAGE_TYPES, JSON_TYPES, mediaType, requireJson} from './http.js'
import {INPUT_NAME, OUTPUT_NAME} from './kserve.js'
import type {Route, RouteCall} from './routes.js'

const SIGNATURE = 'serving_default'

function statusOf(v: ModelVersion) {
  const state = v.state === 'FAILED' ? 'END' : v.state
  return {
    version: String(v.version),
    state,
    status: v.state === 'FAILED' ? {error_code: 'UNKNOWN', error_message: v.reason ?? ''} : {error_code: 'OK', error_message: ''},
  }
}

/** GET /v1/models/{m}[/versions/{v}|/labels/{l}]: every version, newest first, or the one asked for. */
export function status(ctx: ServeContext, state: RequestState, model: string, selector: VersionSelector): Reply {
  state.model = model
  const entry = ctx.repository.model(model)
  if (selector.version === undefined && selector.label === undefined) {
    return json({model_version_status: [...entry.versions.values()].sort((a, b) => b.version - a.version).map(statusOf)})
  }
  let wanted: number
  if (selector.label !== undefined) wanted = ctx.repository.find(model, selector).version
  else {
    if (!/^[1-9][0-9]{0,15}$/.test(selector.version!)) throw badRequest(`invalid version "${selector.version}": expected a positive integer`)
    wanted = Number(selector.version)
  }
  const v = entry.versions.get(wanted)
  if (v === undefined) throw notFound(`Could not find version ${wanted} of model ${model}`)
  state.version = String(v.version)
  return json({model_version_status: [statusOf(v)]})
}

function tensorInfo(name: string, shape: number[]) {
  return {
    dtype: 'DT_FLOAT',
    tensor_shape: {dim: shape.map((size) => ({size: String(size), name: ''})), unknown_rank: false},
    name: `${name}:0`,
  }
}

export function metadata(ctx: ServeContext, state: RequestState, model: string, selector: VersionSelector): Reply {
  const v = useVersion(ctx, state, model, selector)
  return json({
    model_spec: {name: model, signature_name: '', version: String(v.version)},
    metadata: {
      signature_def: {
        signature_def: {
          [SIGNATURE]: {
            inputs: {[INPUT_NAME]: tensorInfo(INPUT_NAME, [-1, ...v.inputShape])},
            outputs: {[OUTPUT_NAME]: tensorInfo(OUTPUT_NAME, [-1, v.labels.length])},
            method_name: 'tensorflow/serving/predict',
          },
        },
      },
    },
  })
}

function checkSignature(request: Record<string, unknown>): void {
  const name = request.signature_name
  if (name !== undefined && name !== SIGNATURE && name !== '') {
    throw badRequest(`Serving signature name: ${JSON.stringify(name)} not found in signature def; this model has "${SIGNATURE}"`)
  }
}

/**
 * One instance (a row, or a batch element of a columnar input) into `out` at slot i: a {"b64": ...}
 * image (decoded later, returned), a named-input object, or numbers shaped like the model input.
 */
function readInstance(value: unknown, version: ModelVersion, out: Float32Array, i: number, where: string): Buffer | undefined {
  if (isObject(value)) {
    if ('b64' in value) return decodeBase64(value.b64, `${where}.b64`)
    if (INPUT_NAME in value && Object.keys(value).length === 1) return readInstance(value[INPUT_NAME], version, out, i, `${where}.${INPUT_NAME}`)
    throw badRequest(`${where}: expected {"b64": "<base64 image>"}, {"${INPUT_NAME}": ...} or an array of numbers shaped ${shapeText(version.inputShape)}; found keys ${Object.keys(value).map((k) => JSON.stringify(k)).join(', ') || '(none)'}`)
  }
  if (!Array.isArray(value)) throw badRequest(`${where}: expected an image {"b64": ...} or an array of numbers shaped ${shapeText(version.inputShape)}`)
  const size = inputSize(version)
  const slot = out.subarray(i * size, (i + 1) * size)
  const count = fillNumbers(value, slot, 0, where)
  if (count !== size) throw badRequest(`${where}: ${count} values do not fit the model input ${shapeText(version.inputShape)} (${size} values)`)
  return undefined
}

async function readInstances(ctx: ServeContext, version: ModelVersion, instances: unknown[], where: string): Promise<Float32Array> {
  checkBatch(instances.length, ctx.options)
  const size = inputSize(version)
  const out = new Float32Array(instances.length * size)
  const images: Array<{i: number; bytes: Buffer}> = []
  instances.forEach((value, i) => {
    const bytes = readInstance(value, version, out, i, `${where}[${i}]`)
    if (bytes !== undefined) images.push({i, bytes})
  })
  if (images.length > 0) {
    const decoded = await imagesToInput(images.map((x) => x.bytes), version, ctx.options, (k) => `${where}[${images[k]!.i}]`, 'json', ctx.metrics)
    images.forEach(({i}, k) => out.set(decoded.subarray(k * size, (k + 1) * size), i * size))
  }
  return out
}

function rows(probabilities: Float32Array, n: number, numClasses: number): number[][] {
  return Array.from({length: n}, (_, row) => Array.from(probabilities.subarray(row * numClasses, (row + 1) * numClasses)))
}

export async function predict(ctx: ServeContext, state: RequestState, model: string, selector: VersionSelector, body: Buffer): Promise<Reply> {
  const request = parseJson(body, ctx.options.maxJsonDepth)
  if (!isObject(request)) throw badRequest('the request body must be a JSON object with "instances" or "inputs"')
  checkSignature(request)
  const hasInstances = request.instances !== undefined
  const hasInputs = request.inputs !== undefined
  if (hasInstances === hasInputs) throw badRequest('the request must have exactly one of "instances" (row format) or "inputs" (columnar format)')
  const version = useVersion(ctx, state, model, selector)
  let batch = hasInstances ? request.instances : request.inputs
  if (hasInputs && isObject(batch) && !('b64' in batch)) {
    const names = Object.keys(batch)
    if (names.length !== 1 || names[0] !== INPUT_NAME) throw badRequest(`"inputs" names ${names.map((k) => JSON.stringify(k)).join(', ') || 'no input'}; this model has one input, "${INPUT_NAME}"`)
    batch = batch[INPUT_NAME]
  }
  if (!Array.isArray(batch)) throw badRequest(`"${hasInstances ? 'instances' : 'inputs'}" must be a list with one element per image`)
  const input = await readInstances(ctx, version, batch, hasInstances ? 'instances' : 'inputs')
  const n = batch.length
  const probabilities = await runModel(ctx, state, version, input, n)
  const values = rows(probabilities, n, version.labels.length)
  return json(hasInstances ? {predictions: values} : {outputs: values})
}

function classResults(probabilities: Float32Array, n: number, version: ModelVersion, top: number) {
  const numClasses = version.labels.length
  return Array.from({length: n}, (_, row) => topScores(probabilities, row, numClasses, top).map(({index, score}) => [version.labels[index]!, score]))
}

function parseTopK(query: URLSearchParams): number {
  const text = query.get('top_k')
  if (text === null) return Number.POSITIVE_INFINITY
  if (!/^[1-9][0-9]{0,5}$/.test(text)) throw badRequest(`top_k must be a positive integer, got ${JSON.stringify(text)}`)
  return Number(text)
}

/** TF Serving's :classify with JSON examples: {"examples": [{"image": {"b64": ...}}, ...]}. */
export async function classify(ctx: ServeContext, state: RequestState, model: string, selector: VersionSelector, body: Buffer, query: URLSearchParams): Promise<Reply> {
  const top = parseTopK(query)
  const request = parseJson(body, ctx.options.maxJsonDepth)
  if (!isObject(request)) throw badRequest('the request body must be a JSON object {"examples": [...]}')
  checkSignature(request)
  if (!Array.isArray(request.examples)) throw badRequest('"examples" must be a list of examples, e.g. [{"image": {"b64": "<base64 image>"}}]')
  const version = useVersion(ctx, state, model, selector)
  const instances = request.examples.map((example, i) => {
    if (!isObject(example)) throw badRequest(`examples[${i}] must be an object of features`)
    const keys = Object.keys(example)
    const key = keys.includes(INPUT_NAME) ? INPUT_NAME : keys.includes('image/encoded') ? 'image/encoded' : keys.length === 1 ? keys[0]! : undefined
    if (key === undefined) throw badRequest(`examples[${i}] must have an "${INPUT_NAME}" feature`)
    const value = example[key]
    // A bytes feature may come as a one-element list.
    return Array.isArray(value) && value.length === 1 && isObject(value[0]) ? value[0] : value
  })
  const input = await readInstances(ctx, version, instances, 'examples')
  const probabilities = await runModel(ctx, state, version, input, instances.length)
  return json({results: classResults(probabilities, instances.length, version, top)})
}

/** :classify with the image itself as the body (Content-Type image/*), for curl --data-binary. */
export async function classifyRaw(ctx: ServeContext, state: RequestState, model: string, selector: VersionSelector, body: Buffer, query: URLSearchParams): Promise<Reply> {
  const top = parseTopK(query)
  const version = useVersion(ctx, state, model, selector)
  if (body.length === 0) throw badRequest('the request body is empty; send the image file itself')
  const input = await imagesToInput([body], version, ctx.options, () => 'the image', 'raw', ctx.metrics)
  const probabilities = await runModel(ctx, state, version, input, 1)
  return json({results: classResults(probabilities, 1, version, top)})
}

const MODEL = String.raw`^\/v1\/models\/([^/:]+)(?:\/versions\/([^/:]+)|\/labels\/([^/:]+))?`

const selectorOf = (params: RouteCall['params']): VersionSelector => ({version: params[1], label: params[2]})

async function predictOrClassify(ctx: ServeContext, state: RequestState, {req, params, body, query}: RouteCall): Promise<Reply> {
  const model = params[0]!
  const verb = params[3]
  state.inference = true
  state.model = model
  const type = mediaType(req)
  if (verb === 'classify' && IMAGE_TYPES.test(type)) {
    state.protocol = 'raw'
    return classifyRaw(ctx, state, model, selectorOf(params), await body({model, selector: selectorOf(params)}), query())
  }
  if (verb === 'classify' && type !== '' && !JSON_TYPES.test(type)) {
    throw new HttpError(415, `Content-Type ${type} is not accepted by :classify; send application/json examples, or the image itself as image/*`)
  }
  requireJson(req)
  const bytes = await body({model, selector: selectorOf(params)})
  return verb === 'predict' ? predict(ctx, state, model, selectorOf(params), bytes) : classify(ctx, state, model, selectorOf(params), bytes, query())
}

export const tfservingRoutes: readonly Route[] = [
  {protocol: 'tfserving', pattern: new RegExp(`${MODEL}\\/metadata$`), methods: ['GET'], handle: (ctx, state, {params}) => metadata(ctx, state, params[0]!, selectorOf(params))},
  {protocol: 'tfserving', pattern: new RegExp(`${MODEL}$`), methods: ['GET'], handle: (ctx, state, {params}) => status(ctx, state, params[0]!, selectorOf(params))},
  {protocol: 'tfserving', pattern: new RegExp(`${MODEL}:(predict|classify)$`), methods: ['POST'], handle: predictOrClassify},
  {
    protocol: 'tfserving',
    pattern: new RegExp(`${MODEL}:([a-zA-Z]+)$`),
    handle: (_ctx, _state, {params}) => {
      if (params[3] === 'regress') throw badRequest(`model "${params[0]}" is a classifier: it has no regression signature; use :classify or :predict`)
      throw notFound(`unknown method :${params[3]}; use :predict or :classify`)
    },
  },
]
