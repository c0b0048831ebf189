// TF Serving's gRPC tensorflow.serving.PredictionService: Predict (the image as a DT_FLOAT tensor
// shaped [n,h,w,c], in tensor_content or float_val, or as DT_STRING encoded image files), Classify
// (tf.Example inputs with the encoded image in a bytes feature; every class with its score, best
// first, as the REST :classify answers) and GetModelMetadata (the serving_default SignatureDef).
import protobuf from 'protobufjs'
import {runModel, useVersion, type RequestState, type ServeContext} from '../context.js'
import {badRequest} from '../http-error.js'
import {checkBatch, imagesToInput, inputSize, shapeText, topScores} from '../inputs.js'
import {readFloats} from '../protocols/binary.js'
import {INPUT_NAME, OUTPUT_NAME} from '../protocols/kserve.js'
import type {ModelVersion, VersionSelector} from '../repository.js'
import {PROTOS_DIR, TFSERVING_PROTO} from './protos.js'

const SIGNATURE = 'serving_default'

export interface ModelSpec {
  name: string
  version?: {value: number} | null
  version_label?: string
  version_choice?: 'version' | 'version_label'
  signature_name: string
}

export interface TensorProto {
  dtype: string
  tensor_shape?: {dim: Array<{size: number; name?: string}>; unknown_rank?: boolean} | null
  tensor_content?: Buffer
  float_val?: number[]
  string_val?: Buffer[]
}

export interface PredictRequest {
  model_spec?: ModelSpec | null
  inputs: Record<string, TensorProto>
  output_filter: string[]
}

interface Feature {
  kind?: 'bytes_list' | 'float_list' | 'int64_list'
  bytes_list?: {value: Buffer[]}
}

export interface ClassificationRequest {
  model_spec?: ModelSpec | null
  input?: {kind?: string; example_list?: {examples: Array<{features?: {feature: Record<string, Feature>} | null}>}; example_list_with_context?: unknown} | null
}

function spec(request: {model_spec?: ModelSpec | null}): {model: string; selector: VersionSelector} {
  const modelSpec = request.model_spec
  if (!modelSpec || modelSpec.name === '') throw badRequest('model_spec.name is required')
  if (modelSpec.signature_name !== '' && modelSpec.signature_name !== SIGNATURE) {
    throw badRequest(`Serving signature name: ${JSON.stringify(modelSpec.signature_name)} not found in signature def; this model has "${SIGNATURE}"`)
  }
  if (modelSpec.version_choice === 'version_label' && modelSpec.version_label) return {model: modelSpec.name, selector: {label: modelSpec.version_label}}
  if (modelSpec.version_choice === 'version' && modelSpec.version) return {model: modelSpec.name, selector: {version: String(modelSpec.version.value)}}
  return {model: modelSpec.name, selector: {}}
}

const answeredSpec = (version: ModelVersion) => ({name: version.model, version: {value: version.version}, signature_name: SIGNATURE})

const dims = (tensor: TensorProto) => (tensor.tensor_shape?.dim ?? []).map((d) => Number(d.size))

/** The image bytes a request carries, before it is decoded (what admission counts). */
export function predictBytes(request: PredictRequest): number {
  let size = 0
  for (const tensor of Object.values(request.inputs ?? {})) {
    size += (tensor.tensor_content?.length ?? 0) + (tensor.float_val?.length ?? 0) * 4
    for (const element of tensor.string_val ?? []) size += element.length
  }
  return size
}

async function readTensor(ctx: ServeContext, version: ModelVersion, tensor: TensorProto): Promise<{data: Float32Array; n: number}> {
  const shape = dims(tensor)
  const where = `input "${INPUT_NAME}"`
  if (tensor.dtype === 'DT_FLOAT') {
    const [n, ...rest] = shape
    if (shape.length !== 4 || rest.some((d, i) => d !== version.inputShape[i])) {
      throw badRequest(`${where}: shape ${shapeText(shape)} does not match the model input ${shapeText([-1, ...version.inputShape])}`)
    }
    checkBatch(n!, ctx.options)
    const values = n! * inputSize(version)
    const content = tensor.tensor_content ?? Buffer.alloc(0)
    if (content.length > 0) {
      if (content.length !== values * 4) throw badRequest(`${where}: shape ${shapeText(shape)} needs ${values} floats (${values * 4} bytes), tensor_content has ${content.length} bytes`)
      return {data: readFloats(content, `${where} tensor_content`), n: n!}
    }
    const floats = tensor.float_val ?? []
    if (floats.length !== values) throw badRequest(`${where}: shape ${shapeText(shape)} needs ${values} values, float_val has ${floats.length}`)
    const data = Float32Array.from(floats)
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) throw badRequest(`${where}: value ${data[i]} at position ${i} is not a finite 32-bit float; NaN and Infinity are not accepted`)
    }
    return {data, n: n!}
  }
  if (tensor.dtype === 'DT_STRING') {
    if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1))) {
      throw badRequest(`${where}: a DT_STRING input holds one encoded image per element; shape must be [n] or [n,1], got ${shapeText(shape)}`)
    }
    const images = tensor.string_val ?? []
    if (images.length !== shape[0]) throw badRequest(`${where}: shape ${shapeText(shape)} needs ${shape[0]} elements, string_val has ${images.length}`)
    checkBatch(images.length, ctx.options)
    return {data: await imagesToInput(images, version, ctx.options, (i) => `${where} element ${i}`, 'json', ctx.metrics), n: images.length}
  }
  throw badRequest(`${where}: dtype ${tensor.dtype} is not accepted; send DT_FLOAT (shape ${shapeText([-1, ...version.inputShape])}, the preprocessed image) or DT_STRING (encoded image files)`)
}

export async function predict(ctx: ServeContext, state: RequestState, request: PredictRequest) {
  state.inference = true
  const {model, selector} = spec(request)
  state.model = model
  const names = Object.keys(request.inputs ?? {})
  if (names.length !== 1 || names[0] !== INPUT_NAME) throw badRequest(`"inputs" names ${names.map((k) => JSON.stringify(k)).join(', ') || 'no input'}; this model has one input, "${INPUT_NAME}"`)
  for (const name of request.output_filter ?? []) {
    if (name !== OUTPUT_NAME) throw badRequest(`output_filter names "${name}"; this model has one output, "${OUTPUT_NAME}"`)
  }
  const version = useVersion(ctx, state, model, selector)
  const {data, n} = await readTensor(ctx, version, request.inputs[INPUT_NAME]!)
  const probabilities = await runModel(ctx, state, version, data, n)
  return {
    model_spec: answeredSpec(version),
    outputs: {[OUTPUT_NAME]: {dtype: 'DT_FLOAT', tensor_shape: {dim: [{size: n}, {size: version.labels.length}]}, float_val: Array.from(probabilities)}},
  }
}

/** The encoded image of one tf.Example: its "image" (or "image/encoded", or only) bytes feature. */
function exampleImage(features: Record<string, Feature>, i: number): Buffer {
  const keys = Object.keys(features)
  const key = keys.includes(INPUT_NAME) ? INPUT_NAME : keys.includes('image/encoded') ? 'image/encoded' : keys.length === 1 ? keys[0]! : undefined
  if (key === undefined) throw badRequest(`examples[${i}] must have an "${INPUT_NAME}" feature`)
  const values = features[key]!.bytes_list?.value
  if (features[key]!.kind !== 'bytes_list' || values?.length !== 1) throw badRequest(`examples[${i}].${key} must be a bytes_list holding one encoded image`)
  return values[0]!
}

export async function classify(ctx: ServeContext, state: RequestState, request: ClassificationRequest) {
  state.inference = true
  const {model, selector} = spec(request)
  state.model = model
  if (request.input?.kind !== 'example_list') throw badRequest('input must be an example_list of tf.Example, each with an "image" bytes feature')
  const examples = request.input.example_list!.examples ?? []
  checkBatch(examples.length, ctx.options)
  const images = examples.map((example, i) => exampleImage(example.features?.feature ?? {}, i))
  const version = useVersion(ctx, state, model, selector)
  const input = await imagesToInput(images, version, ctx.options, (i) => `examples[${i}]`, 'json', ctx.metrics)
  const probabilities = await runModel(ctx, state, version, input, images.length)
  const numClasses = version.labels.length
  return {
    model_spec: answeredSpec(version),
    result: {
      classifications: images.map((_, row) => ({classes: topScores(probabilities, row, numClasses, numClasses).map(({index, score}) => ({label: version.labels[index]!, score}))})),
    },
  }
}

let signatureDefMap: protobuf.Type | undefined

function tensorInfo(name: string, shape: number[]) {
  return {name: `${name}:0`, dtype: 1 /* DT_FLOAT */, tensor_shape: {dim: shape.map((size) => ({size}))}}
}

/** GetModelMetadata: metadata_field ["signature_def"], answered as an Any holding a SignatureDefMap. */
export function getModelMetadata(ctx: ServeContext, state: RequestState, request: {model_spec?: ModelSpec | null; metadata_field: string[]}) {
  const {model, selector} = spec(request)
  state.model = model
  const fields = request.metadata_field ?? []
  if (fields.length !== 1 || fields[0] !== 'signature_def') throw badRequest(`metadata_field must be ["signature_def"], got ${JSON.stringify(fields)}`)
  const version = useVersion(ctx, state, model, selector)
  if (signatureDefMap === undefined) {
    const root = new protobuf.Root()
    root.resolvePath = (_origin, target) => `${PROTOS_DIR}${target}`
    signatureDefMap = root.loadSync(TFSERVING_PROTO, {keepCase: true}).lookupType('tensorflow.serving.SignatureDefMap')
  }
  const value = signatureDefMap.encode({
    signature_def: {
      [SIGNATURE]: {
        inputs: {[INPUT_NAME]: tensorInfo(INPUT_NAME, [-1, ...version.inputShape])},
        outputs: {[OUTPUT_NAME]: tensorInfo(OUTPUT_NAME, [-1, version.labels.length])},
        method_name: 'tensorflow/serving/predict',
      },
    },
  }).finish()
  return {model_spec: answeredSpec(version), metadata: {signature_def: {type_url: 'type.googleapis.com/tensorflow.serving.SignatureDefMap', value: Buffer.from(value)}}}
}
