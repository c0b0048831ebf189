// The KServe V2 / Open Inference Protocol gRPC service (inference.GRPCInferenceService): liveness,
// readiness, server and model metadata, the repository index, and ModelInfer with the image as FP32
// (preprocessed) or BYTES (encoded image files) in either form Triton's clients send: raw_input_contents
// (little-endian tensor bytes; a BYTES element is a 4-byte length and its bytes) or the typed
// `contents` (fp32_contents, bytes_contents). Answers come in the form the request came in.
import {runModel, useVersion, type RequestState, type ServeContext} from '../context.js'
import {badRequest} from '../http-error.js'
import {checkBatch, imagesToInput, inputSize, shapeText, topScores} from '../inputs.js'
import {elementBytes, floatBytes, readElements, readFloats} from '../protocols/binary.js'
import {INPUT_NAME, modelMetadata, modelReady, OUTPUT_NAME, repositoryIndex, serverMetadata} from '../protocols/kserve.js'
import type {ModelVersion} from '../repository.js'

/** InferParameter: one of its fields is set, named by parameter_choice. */
export interface InferParameter {
  parameter_choice?: 'bool_param' | 'int64_param' | 'string_param' | 'double_param' | 'uint64_param'
  bool_param?: boolean
  int64_param?: number
  string_param?: string
  double_param?: number
  uint64_param?: number
}

export interface InferTensorContents {
  fp32_contents?: number[]
  bytes_contents?: Buffer[]
  bool_contents?: boolean[]
  int_contents?: number[]
  int64_contents?: number[]
  uint_contents?: number[]
  uint64_contents?: number[]
  fp64_contents?: number[]
}

export interface InferInputTensor {
  name: string
  datatype: string
  shape: number[]
  parameters?: Record<string, InferParameter>
  contents?: InferTensorContents | null
}

export interface ModelInferRequest {
  model_name: string
  model_version: string
  id: string
  parameters?: Record<string, InferParameter>
  inputs: InferInputTensor[]
  outputs: Array<{name: string; parameters?: Record<string, InferParameter>}>
  raw_input_contents: Buffer[]
}

export interface InferOutputTensor {
  name: string
  datatype: string
  shape: number[]
  parameters?: Record<string, InferParameter>
  contents?: InferTensorContents
}

export interface ModelInferResponse {
  model_name: string
  model_version: string
  id: string
  outputs: InferOutputTensor[]
  raw_output_contents: Buffer[]
}

export const serverLive = () => ({live: true})

export const serverReady = (ctx: ServeContext) => ({ready: !ctx.draining() && ctx.repository.ready()})

/** Version '' is the newest ready one, as over HTTP. */
const versionOf = (text: string | undefined) => (text === undefined || text === '' ? undefined : text)

export function modelReadyCall(ctx: ServeContext, state: RequestState, request: {name: string; version: string}) {
  if (ctx.draining()) return {ready: false}
  return {ready: modelReady(ctx, state, request.name, versionOf(request.version)).status === 200}
}

export function serverMetadataCall(ctx: ServeContext) {
  const {name, version, extensions} = serverMetadata(ctx).body as {name: string; version: string; extensions: string[]}
  return {name, version, extensions}
}

export function modelMetadataCall(ctx: ServeContext, state: RequestState, request: {name: string; version: string}) {
  return modelMetadata(ctx, state, request.name, versionOf(request.version)).body
}

export function repositoryIndexCall(ctx: ServeContext, request: {ready: boolean}) {
  const models = repositoryIndex(ctx).body as Array<{name: string; version: string; state: string; reason?: string}>
  return {models: models.filter((m) => !request.ready || m.state === 'READY').map((m) => ({name: m.name, version: m.version, state: m.state, reason: m.reason ?? ''}))}
}

/** The image bytes a request carries, before it is decoded (what admission counts). */
export function requestBytes(request: ModelInferRequest): number {
  let size = 0
  for (const raw of request.raw_input_contents ?? []) size += raw.length
  for (const input of request.inputs ?? []) {
    size += (input.contents?.fp32_contents?.length ?? 0) * 4
    for (const element of input.contents?.bytes_contents ?? []) size += element.length
  }
  return size
}

function intParameter(parameter: InferParameter | undefined, where: string): number | undefined {
  if (parameter === undefined) return undefined
  const value = parameter.int64_param ?? parameter.uint64_param
  if (parameter.parameter_choice === 'int64_param' || parameter.parameter_choice === 'uint64_param') {
    if (Number.isInteger(value) && value! >= 1) return value
  }
  throw badRequest(`${where} must be a positive int64_param, got ${JSON.stringify(parameter)}`)
}

/** Output "probabilities", or its top-k classes with parameters {classification: k} (Triton's extension). */
function parseOutputs(outputs: ModelInferRequest['outputs']): Array<{name: string; classification?: number}> {
  if (outputs.length === 0) return [{name: OUTPUT_NAME}]
  return outputs.map((output, i) => {
    if (output.name !== OUTPUT_NAME) throw badRequest(`unexpected inference output "${output.name}"; this model has one output, "${OUTPUT_NAME}"`)
    const k = intParameter(output.parameters?.classification, `outputs[${i}].parameters.classification`)
    return k === undefined ? {name: output.name} : {name: output.name, classification: k}
  })
}

function checkShape(shape: number[]): void {
  if (shape.length === 0 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape)} must be non-negative integers`)
}

async function readInput(ctx: ServeContext, version: ModelVersion, input: InferInputTensor, raw: Buffer | undefined): Promise<{data: Float32Array; n: number}> {
  if (input.name !== INPUT_NAME) throw badRequest(`unexpected inference input ${JSON.stringify(input.name)} for model "${version.model}"; its input is "${INPUT_NAME}"`)
  const shape = input.shape ?? []
  checkShape(shape)
  const contents = input.contents ?? {}
  const expected = [-1, ...version.inputShape]
  if (input.datatype === 'FP32') {
    const [n, ...rest] = shape
    if (shape.length !== 4 || rest.some((d, i) => d !== version.inputShape[i])) {
      throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape)} does not match the model input ${shapeText(expected)}`)
    }
    checkBatch(n!, ctx.options)
    const values = n! * inputSize(version)
    if (raw !== undefined) {
      if (raw.length !== values * 4) throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape)} needs ${values} FP32 values (${values * 4} bytes), raw_input_contents has ${raw.length} bytes`)
      return {data: readFloats(raw, `input "${INPUT_NAME}" raw_input_contents`), n: n!}
    }
    const floats = contents.fp32_contents ?? []
    if (floats.length !== values) throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape)} needs ${values} values, contents.fp32_contents has ${floats.length}`)
    const data = Float32Array.from(floats)
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) throw badRequest(`input "${INPUT_NAME}": value ${data[i]} at position ${i} is not a finite 32-bit float; NaN and Infinity are not accepted`)
    }
    return {data, n: n!}
  }
  if (input.datatype === 'BYTES') {
    if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1))) {
      throw badRequest(`input "${INPUT_NAME}": BYTES input holds one encoded image per element; shape must be [n] or [n,1], got ${shapeText(shape)}`)
    }
    const n = shape[0]!
    const images = raw !== undefined ? readElements(raw, `input "${INPUT_NAME}" raw_input_contents`) : (contents.bytes_contents ?? [])
    if (images.length !== n) throw badRequest(`input "${INPUT_NAME}": shape ${shapeText(shape)} needs ${n} elements, ${raw !== undefined ? 'raw_input_contents' : 'contents.bytes_contents'} has ${images.length}`)
    checkBatch(n, ctx.options)
    return {data: await imagesToInput(images, version, ctx.options, (i) => `input "${INPUT_NAME}" element ${i}`, 'json', ctx.metrics), n}
  }
  throw badRequest(`input "${INPUT_NAME}": datatype ${JSON.stringify(input.datatype)} is not accepted; send FP32 (shape ${shapeText(expected)}, the preprocessed image) or BYTES (encoded image files)`)
}

/** ModelInfer: the request's form (raw or typed contents) is the answer's form. */
export async function modelInfer(ctx: ServeContext, state: RequestState, request: ModelInferRequest): Promise<ModelInferResponse> {
  state.inference = true
  const model = request.model_name
  if (model === '') throw badRequest('model_name is required')
  state.model = model
  const inputs = request.inputs ?? []
  const raws = request.raw_input_contents ?? []
  if (inputs.length === 0) throw badRequest('"inputs" must hold the image tensor')
  if (raws.length > 0 && raws.length !== inputs.length) {
    throw badRequest(`raw_input_contents has ${raws.length} entries for ${inputs.length} inputs; send every input's data there, or none`)
  }
  const outputs = parseOutputs(request.outputs ?? [])
  const version = useVersion(ctx, state, model, {version: versionOf(request.model_version)})
  if (inputs.length !== 1) throw badRequest(`model "${model}" has one input ("${INPUT_NAME}"); the request has ${inputs.length}`)
  const raw = raws.length > 0
  const {data, n} = await readInput(ctx, version, inputs[0]!, raws[0])
  const probabilities = await runModel(ctx, state, version, data, n)
  const numClasses = version.labels.length
  const rawOutputs: Buffer[] = []
  const tensors = outputs.map((output): InferOutputTensor => {
    if (output.classification === undefined) {
      if (raw) rawOutputs.push(floatBytes(probabilities))
      return {name: output.name, datatype: 'FP32', shape: [n, numClasses], ...(raw ? {} : {contents: {fp32_contents: Array.from(probabilities)}})}
    }
    const k = Math.min(output.classification, numClasses)
    const classes: string[] = []
    for (let row = 0; row < n; row++) {
      // Triton's format: value (std::to_string, 6 decimals), class index, label.
      for (const {index, score} of topScores(probabilities, row, numClasses, k)) classes.push(`${score.toFixed(6)}:${index}:${version.labels[index]}`)
    }
    if (raw) rawOutputs.push(elementBytes(classes))
    return {name: output.name, datatype: 'BYTES', shape: [n, k], ...(raw ? {} : {contents: {bytes_contents: classes.map((c) => Buffer.from(c))}})}
  })
  return {model_name: model, model_version: String(version.version), id: request.id ?? '', outputs: tensors, raw_output_contents: rawOutputs}
}

