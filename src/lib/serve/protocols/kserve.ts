// KServe V2 / Triton HTTP protocol: server and model metadata, model readiness, and inference with
// FP32 tensors or BYTES elements holding encoded images, as JSON or as binary tensor data, plus the
// classification extension.
import {json, runModel, useVersion, type Reply, type RequestState, type ServeContext} from '../context.js'
import {takeFloats} from '../floats.js'
import {badRequest, HttpError} from '../http-error.js'
import {checkBatch, decodeBase64, fillNumbers, flatten, imagesToInput, inputSize, isObject, shapeText, topScores} from '../inputs.js'
import type {ModelVersion} from '../repository.js'
import {binaryInputs, binaryReply, elementBytes, floatBytes, parseRequest, readElements, readFloats} from './binary.js'
import {requireJson, requireJsonOrBinary} from './http.js'
import type {Route} from './routes.js'

export const INPUT_NAME = 'image'
export const OUTPUT_NAME = 'probabilities'
export const EXTENSIONS = ['classification', 'model_repository', 'binary_tensor_data'] as const

export function platformOf(version: ModelVersion): string {
  return version.runtime === 'onnx' ? 'onnxruntime_onnx' : 'tensorflowjs_layers'
}

export function serverMetadata(ctx: ServeContext): Reply {
  return json({name: ctx.server.name, version: ctx.server.version, extensions: [...EXTENSIONS], ...(ctx.server.engine ? {engine: ctx.server.engine} : {})})
}

export function modelMetadata(ctx: ServeContext, state: RequestState, model: string, version?: string): Reply {
  const chosen = useVersion(ctx, state, model, {version})
  const entry = ctx.repository.model(model)
  const versions = [...entry.versions.values()].filter((v) => v.state === 'AVAILABLE').map((v) => v.version).sort((a, b) => a - b).map(String)
  return json({
    name: model,
    versions,
    platform: platformOf(chosen),
    inputs: [{name: INPUT_NAME, datatype: 'FP32', shape: [-1, ...chosen.inputShape]}],
    outputs: [{name: OUTPUT_NAME, datatype: 'FP32', shape: [-1, chosen.labels.length]}],
  })
}

/**
 * 200 when ready, 400 when known but not ready: Triton's clients read the status code, the KServe
 * SDK the Open Inference Protocol's body ({"name", "ready"}), so both are sent.
 */
export function modelReady(ctx: ServeContext, state: RequestState, model: string, version?: string): Reply {
  state.model = model
  ctx.repository.model(model)
  try {
    const chosen = ctx.repository.find(model, {version})
    state.version = String(chosen.version)
    return {status: 200, body: {name: model, ready: true}}
  } catch (error) {
    if (error instanceof HttpError && error.status !== 400) return {status: 400, body: {name: model, ready: false}}
    throw error
  }
}

interface RequestedOutput {
  name: string
  classification?: number
  /** Returned as binary tensor data after the JSON. */
  binary: boolean
}

function isBinary(value: unknown, where: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') throw badRequest(`${where} must be true or false, got ${JSON.stringify(value)}`)
  return value
}

/** The request-wide parameters.binary_data_output, which each output's binary_data overrides. */
function binaryByDefault(parameters: unknown): boolean {
  if (parameters === undefined) return false
  if (!isObject(parameters)) throw badRequest('"parameters" must be an object')
  return isBinary(parameters.binary_data_output, 'parameters.binary_data_output') ?? false
}

function parseOutputs(value: unknown, binary: boolean): RequestedOutput[] {
  if (value === undefined) return [{name: OUTPUT_NAME, binary}]
  if (!Array.isArray(value) || value.length === 0) throw badRequest('"outputs" must be a non-empty array of {name, parameters?}')
  return value.map((output, i) => {
    if (!isObject(output) || typeof output.name !== 'string') throw badRequest(`outputs[${i}]: expected an object with a "name"`)
    if (output.name !== OUTPUT_NAME) throw badRequest(`unexpected inference output "${output.name}"; this model has one output, "${OUTPUT_NAME}"`)
    const parameters = output.parameters
    if (parameters !== undefined && !isObject(parameters)) throw badRequest(`outputs[${i}].parameters must be an object`)
    const requested = {name: output.name, binary: isBinary(parameters?.binary_data, `outputs[${i}].parameters.binary_data`) ?? binary}
    const k = parameters?.classification
    if (k === undefined) return requested
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 1) throw badRequest(`outputs[${i}].parameters.classification must be a positive integer, got ${JSON.stringify(k)}`)
    return {...requested, classification: k}
  })
}

/** `binary` is the input's binary tensor data, when it came that way instead of as JSON "data". */
async function parseInput(ctx: ServeContext, version: ModelVersion, input: unknown, binary: Buffer | undefined): Promise<{data: Float32Array; n: number}> {
  if (!isObject(input)) throw badRequest('inputs[0] must be an object {name, shape, datatype, data}')
  if (input.name !== INPUT_NAME) throw badRequest(`unexpected inference input ${JSON.stringify(input.name)} for model "${version.model}"; its input is "${INPUT_NAME}"`)
  const shape = input.shape
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => typeof d === 'number' && Number.isInteger(d) && d >= 0)) {
    throw badRequest(`input "${INPUT_NAME}": "shape" must be an array of non-negative integers`)
  }
  if (binary === undefined && !Array.isArray(input.data)) throw badRequest(`input "${INPUT_NAME}": "data" must be an array`)
  const expected = [-1, ...version.inputShape]
  if (input.datatype === 'FP32') {
    const [n, ...rest] = shape as number[]
    if (shape.length !== 4 || rest.some((d, i) => d !== version.inputShape[i])) {
      throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape as number[])} does not match the model input ${shapeText(expected)}`)
    }
    checkBatch(n!, ctx.options)
    const values = n! * inputSize(version)
    if (binary !== undefined) {
      if (binary.length !== values * 4) {
        throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape as number[])} needs ${values} FP32 values (${values * 4} bytes), but its binary_data_size is ${binary.length}`)
      }
      return {data: readFloats(binary, `input "${INPUT_NAME}" binary data`), n: n!}
    }
    const data = takeFloats(values)
    const count = fillNumbers(input.data, data, 0, `input "${INPUT_NAME}" data`)
    if (count !== data.length) throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape as number[])} needs ${data.length} values, "data" has ${count}`)
    return {data, n: n!}
  }
  if (input.datatype === 'BYTES') {
    if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1))) {
      throw badRequest(`input "${INPUT_NAME}": BYTES input holds one encoded image per element; shape must be [n] or [n,1], got ${shapeText(shape as number[])}`)
    }
    const elements = binary === undefined ? flatten(input.data as unknown[]) : readElements(binary, `input "${INPUT_NAME}" binary data`)
    const n = shape[0] as number
    if (elements.length !== n) throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape as number[])} needs ${n} elements, ${binary === undefined ? '"data"' : 'the binary data'} has ${elements.length}`)
    checkBatch(n, ctx.options)
    const images = binary === undefined ? elements.map((element, i) => decodeBase64(element, `input "${INPUT_NAME}" element ${i}`)) : (elements as Buffer[])
    return {data: await imagesToInput(images, version, ctx.options, (i) => `input "${INPUT_NAME}" element ${i}`, 'json', ctx.metrics), n}
  }
  throw badRequest(`input "${INPUT_NAME}": datatype ${JSON.stringify(input.datatype)} is not accepted; send FP32 (shape ${shapeText(expected)}, the preprocessed image) or BYTES (base64-encoded image files)`)
}

/**
 * `inferenceHeader`: the Inference-Header-Content-Length header, present when the body carries binary
 * tensor data after the JSON.
 */
export async function infer(ctx: ServeContext, state: RequestState, model: string, versionText: string | undefined, body: Buffer, inferenceHeader?: string): Promise<Reply> {
  const {request, binary} = parseRequest(body, inferenceHeader, ctx.options.maxJsonDepth)
  if (!isObject(request)) throw badRequest('the request body must be a JSON object {inputs: [...]}')
  if (request.id !== undefined && typeof request.id !== 'string') throw badRequest('"id" must be a string')
  if (!Array.isArray(request.inputs) || request.inputs.length === 0) throw badRequest('"inputs" must be a non-empty array')
  const inputData = binaryInputs(request.inputs, binary)
  const outputs = parseOutputs(request.outputs, binaryByDefault(request.parameters))
  const version = useVersion(ctx, state, model, {version: versionText})
  if (request.inputs.length !== 1) throw badRequest(`model "${model}" has one input ("${INPUT_NAME}"); the request has ${request.inputs.length}`)
  const {data, n} = await parseInput(ctx, version, request.inputs[0], inputData[0])
  const probabilities = await runModel(ctx, state, version, data, n)
  const numClasses = version.labels.length
  const chunks: Buffer[] = []
  const binaryTensor = (name: string, datatype: string, shape: number[], bytes: Buffer) => {
    chunks.push(bytes)
    return {name, datatype, shape, parameters: {binary_data_size: bytes.length}}
  }
  const response = {
    model_name: model,
    model_version: String(version.version),
    ...(request.id !== undefined ? {id: request.id} : {}),
    outputs: outputs.map((output) => {
      if (output.classification === undefined) {
        if (output.binary) return binaryTensor(output.name, 'FP32', [n, numClasses], floatBytes(probabilities))
        return {name: output.name, datatype: 'FP32', shape: [n, numClasses], data: Array.from(probabilities)}
      }
      const k = Math.min(output.classification, numClasses)
      const data: string[] = []
      for (let row = 0; row < n; row++) {
        // Triton's format: value (std::to_string, 6 decimals), class index, label.
        for (const {index, score} of topScores(probabilities, row, numClasses, k)) data.push(`${score.toFixed(6)}:${index}:${version.labels[index]}`)
      }
      if (output.binary) return binaryTensor(output.name, 'BYTES', [n, k], elementBytes(data))
      return {name: output.name, datatype: 'BYTES', shape: [n, k], data}
    }),
  }
  // Triton answers plain JSON, without the header, when no output was asked for as binary.
  return chunks.length > 0 ? binaryReply(response, chunks) : json(response)
}

/** Triton's POST /v2/repository/index: every version the server knows, with its state. */
export function repositoryIndex(ctx: ServeContext): Reply {
  const states = {AVAILABLE: 'READY', LOADING: 'LOADING', UNLOADING: 'UNLOADING', FAILED: 'UNAVAILABLE'} as const
  const index: Array<Record<string, string>> = []
  for (const entry of ctx.repository.models.values()) {
    for (const v of [...entry.versions.values()].sort((a, b) => a.version - b.version)) {
      index.push({name: entry.name, version: String(v.version), state: states[v.state], ...(v.reason ? {reason: v.reason} : {})})
    }
  }
  return json(index)
}

const MODEL = String.raw`^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?`

export const kserveRoutes: readonly Route[] = [
  {
    // The status code is the answer (Triton's clients); the body is the Open Inference Protocol's
    // {"live": bool} / {"ready": bool}, which the KServe SDK reads.
    protocol: 'health',
    pattern: /^\/v2\/health\/(live|ready)$/,
    methods: ['GET'],
    open: true,
    handle: (ctx, _state, {params}) => {
      const yes = params[0] === 'live' || (!ctx.draining() && ctx.repository.ready())
      return {status: yes ? 200 : 400, body: {[params[0]!]: yes}}
    },
  },
  {
    protocol: 'health',
    pattern: new RegExp(`${MODEL}\\/ready$`),
    methods: ['GET'],
    open: true,
    handle: (ctx, state, {params, authorised}) => {
      if (ctx.draining()) return {status: 400}
      try {
        const reply = modelReady(ctx, state, params[0]!, params[1])
        // Anonymous callers (auth on) get the status code alone, as for the errors below.
        return authorised() ? reply : {status: reply.status}
      } catch (error) {
        // Without the token (auth on) the status code alone answers: error messages name served models.
        if (error instanceof HttpError && !authorised()) return {status: error.status}
        throw error
      }
    },
  },
  {protocol: 'kserve', pattern: /^\/v2\/?$/, methods: ['GET'], handle: (ctx) => serverMetadata(ctx)},
  {protocol: 'kserve', pattern: /^\/v2\/repository\/index$/, methods: ['POST'], handle: (ctx) => repositoryIndex(ctx)},
  {
    protocol: 'kserve',
    pattern: new RegExp(`${MODEL}\\/infer$`),
    methods: ['POST'],
    handle: async (ctx, state, {req, params, body}) => {
      state.inference = true
      state.model = params[0]!
      const inferenceHeader = req.headers['inference-header-content-length']
      if (inferenceHeader === undefined) requireJson(req)
      else requireJsonOrBinary(req)
      return infer(ctx, state, params[0]!, params[1], await body({model: params[0]!, selector: {version: params[1]}}), Array.isArray(inferenceHeader) ? inferenceHeader.join(', ') : inferenceHeader)
    },
  },
  {protocol: 'kserve', pattern: new RegExp(`${MODEL}$`), methods: ['GET'], handle: (ctx, state, {params}) => modelMetadata(ctx, state, params[0]!, params[1])},
]
