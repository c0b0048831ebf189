// Converts a TensorFlow.js layers model (model.json topology + weights) into an ONNX model: input
// `image` NHWC float32 [batch,H,W,C], NCHW inside for convolutions and pooling, `probabilities` out.
import onnxProto from 'onnx-proto'
import {UserError} from '../errors.js'
import {splitWeights, type ModelJson, type StoredWeight} from './quantize.js'

const {onnx} = onnxProto
type NodeProto = onnxProto.onnx.INodeProto
type TensorProto = onnxProto.onnx.ITensorProto
type AttributeProto = onnxProto.onnx.IAttributeProto

/** Opset 13: every op used here exists in it, and older Triton / onnxruntime builds still load it. */
export const ONNX_OPSET = 13
/** The IR version that introduced opset 13. */
const IR_VERSION = 7
export const ONNX_INPUT = 'image'
export const ONNX_OUTPUT = 'probabilities'

const DT = {FLOAT: 1, UINT8: 2, INT64: 7, FLOAT16: 10} as const
const ATTR = onnx.AttributeProto.AttributeType

export interface OnnxOptions {
  modelJson: ModelJson
  weights: Uint8Array
  /** Graph name (the model name). */
  name: string
  producerVersion: string
  /** metadata_props, written in key order. */
  metadata: Record<string, string>
  docString?: string
  /**
   * The graph takes uint8 pixels (0-255) and divides them by 255 itself, as pixelsToFloat does: a
   * caller holding decoded images hands them over without a float32 copy (4x the bytes) made in JS.
   */
  pixelInput?: boolean
}

/** A tensor in the graph: its ONNX name, its shape as Keras sees it (no batch), and whether it is stored NCHW. */
interface Value {
  name: string
  shape: number[]
  nchw: boolean
}

interface LayerSpec {
  className: string
  name: string
  config: Record<string, unknown>
  /** Per call of the layer: the [layer, node, tensor] it was called on. */
  inbound: Array<Array<[string, number, number]>>
}

function unsupported(layer: {name: string; className: string}, detail: string): UserError {
  return new UserError(`cannot export layer "${layer.name}" (${layer.className}) to ONNX: ${detail}`, {
    code: 'EXPORT_UNSUPPORTED_LAYER',
    exit: 'usage',
    details: {layer: layer.name, className: layer.className},
    suggestions: [
      'Export with --format tfjs only, or change model.layers to supported layers.',
      `Supported: ${SUPPORTED_LAYERS.join(', ')}; activations ${SUPPORTED_ACTIVATIONS.join(', ')}.`,
    ],
  })
}

function pair(v: unknown, fallback: number): [number, number] {
  if (v === undefined || v === null) return [fallback, fallback]
  if (typeof v === 'number') return [v, v]
  const a = v as number[]
  return [a[0]!, a[1] ?? a[0]!]
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1)
}

/** Normalises Sequential and functional topologies into one layer table with inbound nodes. */
function readTopology(topology: unknown): {layers: Map<string, LayerSpec>; input: string; output: [string, number, number]} {
  let top = topology as {class_name?: string; config?: unknown; model_config?: unknown}
  if (top && top.model_config) top = top.model_config as typeof top
  const className = top?.class_name
  const layers = new Map<string, LayerSpec>()
  const raw = (Array.isArray(top?.config) ? top.config : (top?.config as {layers?: unknown[]} | undefined)?.layers) as
    | Array<{class_name: string; name?: string; config: Record<string, unknown>; inbound_nodes?: unknown[]}>
    | undefined
  if (!raw || raw.length === 0) throw new UserError('model.json has no layers', {code: 'MODEL_CORRUPT', exit: 'data'})
  const nested = raw.find((l) => ['Sequential', 'Model', 'Functional'].includes(l.class_name))
  if (nested) throw unsupported({name: String(nested.config?.name ?? nested.name), className: nested.class_name}, 'nested models are not supported')
  if (className === 'Sequential') {
    let previous: string
    let start = 0
    if (raw[0]!.class_name === 'InputLayer') {
      previous = String(raw[0]!.config.name)
      layers.set(previous, {className: 'InputLayer', name: previous, config: raw[0]!.config, inbound: []})
      start = 1
    } else {
      // A Sequential model built without an explicit input layer keeps the input shape on its first layer.
      previous = `${String(raw[0]!.config.name)}_input`
      const shape = raw[0]!.config.batch_input_shape ?? (raw[0]!.config.input_shape ? [null, ...(raw[0]!.config.input_shape as number[])] : undefined)
      layers.set(previous, {className: 'InputLayer', name: previous, config: {batch_input_shape: shape, name: previous}, inbound: []})
    }
    for (const l of raw.slice(start)) {
      const name = String(l.config.name)
      layers.set(name, {className: l.class_name, name, config: l.config, inbound: [[[previous, 0, 0]]]})
      previous = name
    }
    return {layers, input: [...layers.keys()][0]!, output: [previous, 0, 0]}
  }
  if (className !== 'Model' && className !== 'Functional') {
    throw new UserError(`model.json holds a ${String(className)} topology; ml exports Sequential and functional models`, {code: 'EXPORT_UNSUPPORTED_MODEL', exit: 'usage'})
  }
  const config = top.config as {input_layers: Array<[string, number, number]>; output_layers: Array<[string, number, number]>}
  for (const l of raw) {
    const name = String(l.name ?? l.config.name)
    const inbound = (l.inbound_nodes ?? []).map((node) => (node as unknown[][]).map((t) => [String(t[0]), Number(t[1]), Number(t[2])] as [string, number, number]))
    layers.set(name, {className: l.class_name, name, config: l.config, inbound})
  }
  if (config.input_layers.length !== 1 || config.output_layers.length !== 1) {
    throw new UserError(`the model has ${config.input_layers.length} inputs and ${config.output_layers.length} outputs; ONNX export needs one of each (image in, probabilities out)`, {
      code: 'EXPORT_UNSUPPORTED_MODEL',
      exit: 'usage',
    })
  }
  return {layers, input: config.input_layers[0]![0], output: config.output_layers[0]!}
}

function attr(name: string, value: number | number[] | string, kind: 'int' | 'float' = 'int'): AttributeProto {
  if (typeof value === 'string') return {name, type: ATTR.STRING, s: new TextEncoder().encode(value)}
  if (Array.isArray(value)) return kind === 'int' ? {name, type: ATTR.INTS, ints: value} : {name, type: ATTR.FLOATS, floats: value}
  return kind === 'int' ? {name, type: ATTR.INT, i: value} : {name, type: ATTR.FLOAT, f: value}
}

/** Permutes a row-major tensor's elements (each `size` bytes) by `perm`. */
function transposeBytes(bytes: Uint8Array, shape: number[], perm: number[], size: number): Uint8Array {
  const rank = shape.length
  const outShape = perm.map((p) => shape[p]!)
  const inStrides = new Array<number>(rank)
  let s = 1
  for (let i = rank - 1; i >= 0; i--) {
    inStrides[i] = s
    s *= shape[i]!
  }
  const total = s
  const out = new Uint8Array(bytes.byteLength)
  const index = new Array<number>(rank).fill(0)
  for (let o = 0; o < total; o++) {
    let src = 0
    for (let d = 0; d < rank; d++) src += index[d]! * inStrides[perm[d]!]!
    out.set(bytes.subarray(src * size, (src + 1) * size), o * size)
    for (let d = rank - 1; d >= 0; d--) {
      if (++index[d]! < outShape[d]!) break
      index[d] = 0
    }
  }
  return out
}

class Graph {
  readonly nodes: NodeProto[] = []
  readonly initializers: TensorProto[] = []
  private readonly used = new Set<string>()
  private readonly weights = new Map<string, StoredWeight>()
  private readonly weightValues = new Map<string, string>()
  private readonly layoutCache = new Map<string, Value>()

  constructor(weights: StoredWeight[]) {
    for (const w of weights) this.weights.set(w.entry.name, w)
  }

  unique(base: string): string {
    let name = base
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`
    this.used.add(name)
    return name
  }

  node(op: string, inputs: string[], outputName: string, attributes: AttributeProto[] = []): string {
    const output = this.unique(outputName)
    this.nodes.push({input: inputs, output: [output], name: output, opType: op, attribute: attributes})
    return output
  }

  private tensor(name: string, dataType: number, dims: number[], raw: Uint8Array): string {
    const unique = this.unique(name)
    this.initializers.push({name: unique, dataType, dims, rawData: raw})
    return unique
  }

  floats(name: string, values: number[] | Float32Array, dims: number[] = [values.length]): string {
    const data = Float32Array.from(values)
    return this.tensor(name, DT.FLOAT, dims, new Uint8Array(data.buffer))
  }

  scalar(name: string, value: number): string {
    return this.floats(name, [value], [])
  }

  int64s(name: string, values: number[]): string {
    const data = BigInt64Array.from(values.map((v) => BigInt(v)))
    return this.tensor(name, DT.INT64, [values.length], new Uint8Array(data.buffer))
  }

  has(weight: string): boolean {
    return this.weights.has(weight)
  }

  shapeOf(layer: LayerSpec, weight: string): number[] {
    const stored = this.weights.get(weight)
    if (!stored) throw unsupported(layer, `its weight ${weight} is missing from the weights manifest`)
    return stored.entry.shape
  }

  /**
   * A float32 value holding weight `name` with its axes permuted by `perm` (and reshaped to
   * `dims`). Quantized weights stay quantized in the file and are decoded by the graph.
   */
  weight(layer: LayerSpec, name: string, perm?: number[], dims?: number[]): string {
    const key = `${name}|${perm?.join(',') ?? ''}|${dims?.join(',') ?? ''}`
    const cached = this.weightValues.get(key)
    if (cached) return cached
    const stored = this.weights.get(name)
    if (!stored) throw unsupported(layer, `its weight ${name} is missing from the weights manifest`)
    const {entry} = stored
    if (entry.dtype !== 'float32') throw unsupported(layer, `weight ${name} has dtype ${entry.dtype}`)
    const q = entry.quantization
    const size = q ? (q.dtype === 'uint8' ? 1 : 2) : 4
    const bytes = perm ? transposeBytes(stored.bytes, entry.shape, perm, size) : stored.bytes
    const shape = dims ?? (perm ? perm.map((p) => entry.shape[p]!) : entry.shape)
    let value: string
    if (!q) {
      value = this.tensor(name, DT.FLOAT, shape, bytes)
    } else if (q.dtype === 'float16') {
      const half = this.tensor(`${name}_float16`, DT.FLOAT16, shape, bytes)
      value = this.node('Cast', [half], name, [attr('to', DT.FLOAT)])
    } else if (q.dtype === 'uint8') {
      // Cast/Sub/Mul rather than DequantizeLinear: onnxruntime turns DequantizeLinear + MatMul/Conv
      // into integer kernels that also quantize the activations (measured: 1e-3 to 6e-3 off in
      // probabilities), while this form is constant-folded at load into exactly tfjs's float weights.
      const raw = this.tensor(`${name}_uint8`, DT.UINT8, shape, bytes)
      const cast = this.node('Cast', [raw], `${name}_cast`, [attr('to', DT.FLOAT)])
      const scale = q.scale!
      const zeroPoint = -q.min! / scale
      if (Math.abs(zeroPoint - Math.round(zeroPoint)) < 1e-6) {
        // (q - zeroPoint) is an exact integer, so one rounding: the float32 tfjs computes.
        const centred = this.node('Sub', [cast, this.scalar(`${name}_zero_point`, Math.round(zeroPoint))], `${name}_centred`)
        value = this.node('Mul', [centred, this.scalar(`${name}_scale`, scale)], name)
      } else {
        // tfjs-converter's own uint8 files need not have an integral zero point: q * scale + min.
        const scaled = this.node('Mul', [cast, this.scalar(`${name}_scale`, scale)], `${name}_scaled`)
        value = this.node('Add', [scaled, this.scalar(`${name}_min`, q.min!)], name)
      }
    } else {
      throw unsupported(layer, `weight ${name} is quantized as ${q.dtype}`)
    }
    this.weightValues.set(key, value)
    return value
  }

  /** The value in NCHW (rank-4 values only), transposing once and remembering it. */
  nchw(v: Value): Value {
    if (v.nchw || v.shape.length !== 3) return v
    const key = `${v.name}>nchw`
    let out = this.layoutCache.get(key)
    if (!out) {
      out = {name: this.node('Transpose', [v.name], `${v.name}_nchw`, [attr('perm', [0, 3, 1, 2])]), shape: v.shape, nchw: true}
      this.layoutCache.set(key, out)
    }
    return out
  }

  /** The value in Keras (NHWC) order, which Flatten, Reshape and Dense weights assume. */
  nhwc(v: Value): Value {
    if (!v.nchw) return v
    const key = `${v.name}>nhwc`
    let out = this.layoutCache.get(key)
    if (!out) {
      out = {name: this.node('Transpose', [v.name], `${v.name}_nhwc`, [attr('perm', [0, 2, 3, 1])]), shape: v.shape, nchw: false}
      this.layoutCache.set(key, out)
    }
    return out
  }
}

/** Explicit pads like TensorFlow: 'same' pads floor(total/2) before and the rest after. */
function spatial(layer: LayerSpec, inH: number, inW: number, kernel: [number, number], strides: [number, number], dilation: [number, number], padding: unknown) {
  const dims = [inH, inW].map((size, i) => {
    const effective = (kernel[i]! - 1) * dilation[i]! + 1
    if (padding === 'same') {
      const out = Math.ceil(size / strides[i]!)
      const total = Math.max((out - 1) * strides[i]! + effective - size, 0)
      return {out, before: Math.floor(total / 2), after: total - Math.floor(total / 2)}
    }
    if (padding !== 'valid' && padding !== undefined) throw unsupported(layer, `padding "${String(padding)}"`)
    const out = Math.floor((size - effective) / strides[i]!) + 1
    if (out <= 0) throw unsupported(layer, `a ${kernel.join('x')} window does not fit its ${inH}x${inW} input`)
    return {out, before: 0, after: 0}
  })
  return {outH: dims[0]!.out, outW: dims[1]!.out, pads: [dims[0]!.before, dims[1]!.before, dims[0]!.after, dims[1]!.after]}
}

function activationName(value: unknown): string {
  if (value === undefined || value === null) return 'linear'
  if (typeof value === 'string') return value
  const named = value as {class_name?: string; config?: {name?: string}}
  return named.class_name ?? 'linear'
}

const ALIASES: Record<string, string> = {hard_sigmoid: 'hardSigmoid', log_softmax: 'logSoftmax', silu: 'swish', gelu_tanh: 'gelu_new'}

type ActivationConverter = (g: Graph, v: Value, base: string, out: (name: string) => Value, channelAxis: number) => Value

/** ONNX for each Keras activation; SUPPORTED_ACTIVATIONS is derived from it. */
const ACTIVATIONS: Record<string, ActivationConverter> = {
  linear: (_g, v) => v,
  relu: (g, v, base, out) => out(g.node('Relu', [v.name], base)),
  relu6: (g, v, base, out) => out(g.node('Clip', [v.name, g.scalar(`${base}_min`, 0), g.scalar(`${base}_max`, 6)], base)),
  elu: (g, v, base, out) => out(g.node('Elu', [v.name], base, [attr('alpha', 1, 'float')])),
  selu: (g, v, base, out) => out(g.node('Selu', [v.name], base, [attr('alpha', 1.6732632423543772, 'float'), attr('gamma', 1.0507009873554805, 'float')])),
  sigmoid: (g, v, base, out) => out(g.node('Sigmoid', [v.name], base)),
  hardSigmoid: (g, v, base, out) => out(g.node('HardSigmoid', [v.name], base, [attr('alpha', 0.2, 'float'), attr('beta', 0.5, 'float')])),
  tanh: (g, v, base, out) => out(g.node('Tanh', [v.name], base)),
  softplus: (g, v, base, out) => out(g.node('Softplus', [v.name], base)),
  softsign: (g, v, base, out) => out(g.node('Softsign', [v.name], base)),
  softmax: (g, v, base, out, channelAxis) => out(g.node('Softmax', [v.name], base, [attr('axis', channelAxis)])),
  logSoftmax: (g, v, base, out, channelAxis) => out(g.node('LogSoftmax', [v.name], base, [attr('axis', channelAxis)])),
  swish: (g, v, base, out) => out(g.node('Mul', [v.name, g.node('Sigmoid', [v.name], `${base}_sigmoid`)], base)),
  mish: (g, v, base, out) => {
    const sp = g.node('Softplus', [v.name], `${base}_softplus`)
    return out(g.node('Mul', [v.name, g.node('Tanh', [sp], `${base}_tanh`)], base))
  },
  gelu: (g, v, base, out) => {
    // tfjs: x * 0.5 * (1 + erf(x / sqrt(2)))
    const erf = g.node('Erf', [g.node('Div', [v.name, g.scalar(`${base}_sqrt2`, Math.SQRT2)], `${base}_scaled`)], `${base}_erf`)
    const cdf = g.node('Mul', [g.node('Add', [erf, g.scalar(`${base}_one`, 1)], `${base}_plus1`), g.scalar(`${base}_half`, 0.5)], `${base}_cdf`)
    return out(g.node('Mul', [v.name, cdf], base))
  },
  gelu_new: (g, v, base, out) => {
    // tfjs: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
    const cube = g.node('Mul', [v.name, g.node('Mul', [v.name, v.name], `${base}_sq`)], `${base}_cube`)
    const inner = g.node('Add', [v.name, g.node('Mul', [cube, g.scalar(`${base}_c`, 0.044715)], `${base}_cubec`)], `${base}_inner`)
    const t = g.node('Tanh', [g.node('Mul', [inner, g.scalar(`${base}_k`, Math.sqrt(2 / Math.PI))], `${base}_arg`)], `${base}_tanh`)
    const half = g.node('Mul', [g.node('Add', [t, g.scalar(`${base}_one`, 1)], `${base}_plus1`), g.scalar(`${base}_half`, 0.5)], `${base}_halfsum`)
    return out(g.node('Mul', [v.name, half], base))
  },
}

function applyActivation(g: Graph, layer: LayerSpec, v: Value, raw: unknown): Value {
  const name = ALIASES[activationName(raw)] ?? activationName(raw)
  const convert = ACTIVATIONS[name]
  if (!convert) throw unsupported(layer, `activation "${name}"`)
  const out = (n: string): Value => ({name: n, shape: v.shape, nchw: v.nchw})
  return convert(g, v, `${layer.name}/${name}`, out, v.nchw && v.shape.length === 3 ? 1 : -1)
}

function channelsLast(layer: LayerSpec): void {
  const format = layer.config.data_format
  if (format !== undefined && format !== null && format !== 'channels_last') throw unsupported(layer, `data_format ${String(format)} (only channels_last)`)
}

function spatialInput(layer: LayerSpec, v: Value): void {
  if (v.shape.length !== 3) throw unsupported(layer, `expects an image-shaped input [H,W,C], got [${v.shape.join(',')}]`)
}

/** Keras axis (batch = 0, may be negative) -> the axis of the stored tensor. */
function storedAxis(layer: LayerSpec, v: Value, axis: number): number {
  const rank = v.shape.length + 1
  const a = axis < 0 ? axis + rank : axis
  if (a <= 0 || a >= rank) throw unsupported(layer, `axis ${axis} on a rank-${rank} tensor`)
  return v.nchw && rank === 4 ? [0, 2, 3, 1][a]! : a
}

type LayerConverter = (g: Graph, layer: LayerSpec, inputs: Value[]) => Value

function single(layer: LayerSpec, inputs: Value[]): Value {
  if (inputs.length !== 1) throw unsupported(layer, `called on ${inputs.length} inputs`)
  return inputs[0]!
}

/** Dropout and the other training-time noise layers: the identity at inference. */
const convertDropout: LayerConverter = (_g, layer, inputs) => single(layer, inputs)

/** Activation */
const convertActivation: LayerConverter = (g, layer, inputs) => applyActivation(g, layer, single(layer, inputs), layer.config.activation)

/** ReLU */
const convertReLU: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  const v = single(layer, inputs)
  const max = c.max_value
  if (max === null || max === undefined) return {...v, name: g.node('Relu', [v.name], n)}
  return {...v, name: g.node('Clip', [v.name, g.scalar(`${n}_min`, 0), g.scalar(`${n}_max`, Number(max))], n)}
}

/**
 * LeakyReLU, ELU and ThresholdedReLU: one ONNX op with a single float `alpha` attribute, read from the
 * Keras config key `key` (ThresholdedReLU calls it `theta`) with Keras's default when the config omits it.
 */
function alphaActivation(op: string, key: string, fallback: number): LayerConverter {
  return (g, layer, inputs) => {
    const v = single(layer, inputs)
    return {...v, name: g.node(op, [v.name], layer.name, [attr('alpha', Number(layer.config[key] ?? fallback), 'float')])}
  }
}

/** Softmax */
const convertSoftmax: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  const v = single(layer, inputs)
  const axis = Array.isArray(c.axis) ? (c.axis as number[]) : [Number(c.axis ?? -1)]
  if (axis.length !== 1) throw unsupported(layer, 'softmax over several axes')
  return {...v, name: g.node('Softmax', [v.name], n, [attr('axis', storedAxis(layer, v, axis[0]!))])}
}

/** Rescaling */
const convertRescaling: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  const v = single(layer, inputs)
  const scaled = g.node('Mul', [v.name, g.scalar(`${n}_scale`, Number(c.scale ?? 1))], `${n}_mul`)
  return {...v, name: g.node('Add', [scaled, g.scalar(`${n}_offset`, Number(c.offset ?? 0))], n)}
}

/** Dense */
const convertDense: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  const v = g.nhwc(single(layer, inputs))
  const units = Number(c.units)
  let out = g.node('MatMul', [v.name, g.weight(layer, `${n}/kernel`)], `${n}_matmul`)
  if (c.use_bias !== false) out = g.node('Add', [out, g.weight(layer, `${n}/bias`)], `${n}_bias`)
  return applyActivation(g, layer, {name: out, shape: [...v.shape.slice(0, -1), units], nchw: false}, c.activation)
}

/** Conv2D, DepthwiseConv2D, SeparableConv2D */
const convertConvolution: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  channelsLast(layer)
  const input = single(layer, inputs)
  spatialInput(layer, input)
  const v = g.nchw(input)
  const [h, w, channels] = v.shape as [number, number, number]
  const kernel = pair(c.kernel_size, 1)
  const strides = pair(c.strides, 1)
  const dilation = pair(c.dilation_rate, 1)
  const {outH, outW, pads} = spatial(layer, h, w, kernel, strides, dilation, c.padding)
  const convAttrs = (group: number) => [
    attr('kernel_shape', kernel),
    attr('strides', strides),
    attr('dilations', dilation),
    attr('pads', pads),
    attr('group', group),
  ]
  let out: string
  let filters: number
  if (layer.className === 'Conv2D') {
    filters = Number(c.filters)
    // HWIO -> OIHW
    const inputs = [v.name, g.weight(layer, `${n}/kernel`, [3, 2, 0, 1])]
    if (c.use_bias !== false) inputs.push(g.weight(layer, `${n}/bias`))
    out = g.node('Conv', inputs, `${n}_conv`, convAttrs(1))
  } else {
    // From the kernel's shape: tfjs leaves depth_multiplier out of SeparableConv2D's config.
    const multiplier = g.shapeOf(layer, `${n}/depthwise_kernel`)[3]!
    // [kh,kw,C,M] -> [C*M,1,kh,kw]: output channel c*M+m, as TensorFlow orders depthwise outputs.
    const depthwise = g.weight(layer, `${n}/depthwise_kernel`, [2, 3, 0, 1], [channels * multiplier, 1, kernel[0], kernel[1]])
    if (layer.className === 'DepthwiseConv2D') {
      filters = channels * multiplier
      const inputs = [v.name, depthwise]
      if (c.use_bias !== false) inputs.push(g.weight(layer, `${n}/bias`))
      out = g.node('Conv', inputs, `${n}_depthwise`, convAttrs(channels))
    } else {
      filters = Number(c.filters)
      const dw = g.node('Conv', [v.name, depthwise], `${n}_depthwise`, convAttrs(channels))
      const inputs = [dw, g.weight(layer, `${n}/pointwise_kernel`, [3, 2, 0, 1])]
      if (c.use_bias !== false) inputs.push(g.weight(layer, `${n}/bias`))
      out = g.node('Conv', inputs, `${n}_pointwise`, [attr('kernel_shape', [1, 1])])
    }
  }
  return applyActivation(g, layer, {name: out, shape: [outH, outW, filters], nchw: true}, c.activation)
}

/** MaxPooling2D, AveragePooling2D */
const convertPooling2D: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  channelsLast(layer)
  const input = single(layer, inputs)
  spatialInput(layer, input)
  const v = g.nchw(input)
  const kernel = pair(c.pool_size, 2)
  const strides = c.strides === null || c.strides === undefined ? kernel : pair(c.strides, 1)
  const {outH, outW, pads} = spatial(layer, v.shape[0]!, v.shape[1]!, kernel, strides, [1, 1], c.padding)
  const attrs = [attr('kernel_shape', kernel), attr('strides', strides), attr('pads', pads)]
  // count_include_pad = 0: like TensorFlow, 'same' averages over the real pixels only.
  if (layer.className === 'AveragePooling2D') attrs.push(attr('count_include_pad', 0))
  const op = layer.className === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool'
  return {name: g.node(op, [v.name], n, attrs), shape: [outH, outW, v.shape[2]!], nchw: true}
}

/** GlobalAveragePooling2D, GlobalMaxPooling2D */
const convertGlobalPooling2D: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  channelsLast(layer)
  const input = single(layer, inputs)
  spatialInput(layer, input)
  if (c.keepdims === true) throw unsupported(layer, 'keepdims')
  const v = g.nchw(input)
  const op = layer.className === 'GlobalAveragePooling2D' ? 'GlobalAveragePool' : 'GlobalMaxPool'
  const pooled = g.node(op, [v.name], `${n}_pool`)
  return {name: g.node('Flatten', [pooled], n, [attr('axis', 1)]), shape: [v.shape[2]!], nchw: false}
}

/** BatchNormalization */
const convertBatchNormalization: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  const input = single(layer, inputs)
  const rank = input.shape.length + 1
  const axis = Array.isArray(c.axis) ? (c.axis as number[]) : [Number(c.axis ?? -1)]
  if (axis.length !== 1 || (axis[0] !== -1 && axis[0] !== rank - 1)) throw unsupported(layer, `normalisation over axis ${JSON.stringify(c.axis)} (only the channel axis)`)
  if (rank !== 2 && rank !== 4) throw unsupported(layer, `a rank-${rank} input`)
  const v = rank === 4 ? g.nchw(input) : input
  const channels = v.shape.at(-1)!
  const gamma = c.scale !== false && g.has(`${n}/gamma`) ? g.weight(layer, `${n}/gamma`) : g.floats(`${n}/gamma`, new Float32Array(channels).fill(1))
  const beta = c.center !== false && g.has(`${n}/beta`) ? g.weight(layer, `${n}/beta`) : g.floats(`${n}/beta`, new Float32Array(channels))
  const out = g.node('BatchNormalization', [v.name, gamma, beta, g.weight(layer, `${n}/moving_mean`), g.weight(layer, `${n}/moving_variance`)], n, [
    attr('epsilon', Number(c.epsilon ?? 1e-3), 'float'),
  ])
  return {name: out, shape: v.shape, nchw: v.nchw}
}

/** Flatten */
const convertFlatten: LayerConverter = (g, layer, inputs) => {
  const n = layer.name
  const v = g.nhwc(single(layer, inputs))
  if (v.shape.length === 1) return v
  return {name: g.node('Flatten', [v.name], n, [attr('axis', 1)]), shape: [product(v.shape)], nchw: false}
}

/** Reshape */
const convertReshape: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  const v = g.nhwc(single(layer, inputs))
  const target = (c.target_shape as number[]).map(Number)
  const known = product(target.filter((d) => d !== -1))
  const shape = target.map((d) => (d === -1 ? product(v.shape) / known : d))
  if (product(shape) !== product(v.shape) || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw unsupported(layer, `cannot reshape [${v.shape.join(',')}] to [${target.join(',')}]`)
  }
  // 0 copies the batch dimension, so the batch stays dynamic.
  return {name: g.node('Reshape', [v.name, g.int64s(`${n}_shape`, [0, ...shape])], n), shape, nchw: false}
}

/** ZeroPadding2D */
const convertZeroPadding2D: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  channelsLast(layer)
  const input = single(layer, inputs)
  spatialInput(layer, input)
  const v = g.nchw(input)
  const p = c.padding
  const [[top, bottom], [left, right]] = typeof p === 'number' ? [[p, p], [p, p]] : Array.isArray(p) && typeof p[0] === 'number' ? [[p[0], p[0]], [p[1], p[1]]] : (p as number[][])
  const pads = g.int64s(`${n}_pads`, [0, 0, top!, left!, 0, 0, bottom!, right!])
  return {name: g.node('Pad', [v.name, pads], n), shape: [v.shape[0]! + top! + bottom!, v.shape[1]! + left! + right!, v.shape[2]!], nchw: true}
}

/** Add, Multiply, Average, Maximum, Minimum, Subtract */
const convertMerge: LayerConverter = (g, layer, inputs) => {
  const n = layer.name
  if (inputs.length < 2) throw unsupported(layer, 'needs at least two inputs')
  const first = inputs[0]!
  const same = inputs.map((v) => (first.nchw ? g.nchw(v) : g.nhwc(v)))
  if (same.some((v) => v.shape.join(',') !== first.shape.join(','))) throw unsupported(layer, 'inputs of different shapes (broadcasting)')
  const names = same.map((v) => v.name)
  const variadic: Record<string, string> = {Add: 'Sum', Average: 'Mean', Maximum: 'Max', Minimum: 'Min'}
  const op = variadic[layer.className]
  let out: string
  if (op) out = g.node(op, names, n)
  else if (layer.className === 'Subtract') {
    if (names.length !== 2) throw unsupported(layer, 'subtract needs exactly two inputs')
    out = g.node('Sub', names, n)
  } else out = names.slice(1).reduce((acc, x, i) => g.node('Mul', [acc, x], i === names.length - 2 ? n : `${n}_${i}`), names[0]!)
  return {name: out, shape: first.shape, nchw: same[0]!.nchw}
}

/** Concatenate */
const convertConcatenate: LayerConverter = (g, layer, inputs) => {
  const c = layer.config
  const n = layer.name
  if (inputs.length < 2) throw unsupported(layer, 'needs at least two inputs')
  const first = inputs[0]!
  const same = inputs.map((v) => (first.nchw ? g.nchw(v) : g.nhwc(v)))
  const rank = first.shape.length + 1
  const kerasAxis = Number(c.axis ?? -1) < 0 ? Number(c.axis ?? -1) + rank : Number(c.axis ?? -1)
  const shape = [...first.shape]
  shape[kerasAxis - 1] = same.reduce((a, v) => a + v.shape[kerasAxis - 1]!, 0)
  const out = g.node('Concat', same.map((v) => v.name), n, [attr('axis', storedAxis(layer, same[0]!, kerasAxis))])
  return {name: out, shape, nchw: same[0]!.nchw}
}

/** The converter of each layer class; SUPPORTED_LAYERS is derived from it, so the two cannot drift. */
const CONVERTERS: Record<string, LayerConverter> = {
  Dropout: convertDropout,
  SpatialDropout1D: convertDropout,
  SpatialDropout2D: convertDropout,
  GaussianNoise: convertDropout,
  GaussianDropout: convertDropout,
  AlphaDropout: convertDropout,
  Activation: convertActivation,
  ReLU: convertReLU,
  LeakyReLU: alphaActivation('LeakyRelu', 'alpha', 0.3),
  ELU: alphaActivation('Elu', 'alpha', 1),
  ThresholdedReLU: alphaActivation('ThresholdedRelu', 'theta', 1),
  Softmax: convertSoftmax,
  Rescaling: convertRescaling,
  Dense: convertDense,
  Conv2D: convertConvolution,
  DepthwiseConv2D: convertConvolution,
  SeparableConv2D: convertConvolution,
  MaxPooling2D: convertPooling2D,
  AveragePooling2D: convertPooling2D,
  GlobalAveragePooling2D: convertGlobalPooling2D,
  GlobalMaxPooling2D: convertGlobalPooling2D,
  BatchNormalization: convertBatchNormalization,
  Flatten: convertFlatten,
  Reshape: convertReshape,
  ZeroPadding2D: convertZeroPadding2D,
  Add: convertMerge,
  Multiply: convertMerge,
  Average: convertMerge,
  Maximum: convertMerge,
  Minimum: convertMerge,
  Subtract: convertMerge,
  Concatenate: convertConcatenate,
}

function convert(g: Graph, layer: LayerSpec, inputs: Value[]): Value {
  const converter = CONVERTERS[layer.className]
  if (!converter) throw unsupported(layer, 'this layer type has no ONNX conversion')
  return converter(g, layer, inputs)
}

/** Layer classes the converter knows, for error messages and the README: derived from the table. */
export const SUPPORTED_LAYERS: readonly string[] = ['InputLayer', ...Object.keys(CONVERTERS)]

/** Activations the converter knows: derived from the table. */
export const SUPPORTED_ACTIVATIONS: readonly string[] = Object.keys(ACTIVATIONS)

function inputShape(layer: LayerSpec): number[] {
  const batchShape = layer.config.batch_input_shape as Array<number | null> | undefined
  if (!batchShape || batchShape.length < 2 || batchShape.slice(1).some((d) => typeof d !== 'number' || d <= 0)) {
    throw unsupported(layer, `the input needs a fixed shape, got ${JSON.stringify(batchShape)}`)
  }
  return batchShape.slice(1) as number[]
}

function valueInfo(name: string, shape: number[], elemType: number = DT.FLOAT) {
  return {
    name,
    type: {tensorType: {elemType, shape: {dim: [{dimParam: 'batch'}, ...shape.map((d) => ({dimValue: d}))]}}},
  }
}

/** Builds the ONNX ModelProto of a tfjs layers model and returns its serialised bytes. */
export function convertToOnnx(options: OnnxOptions): Uint8Array {
  const {layers, input, output} = readTopology(options.modelJson.modelTopology)
  const g = new Graph(splitWeights(options.modelJson, options.weights))
  const inputLayer = layers.get(input)
  if (!inputLayer || inputLayer.className !== 'InputLayer') throw new UserError(`model.json: input layer ${input} not found`, {code: 'MODEL_CORRUPT', exit: 'data'})
  const shape = inputShape(inputLayer)
  g.unique(ONNX_INPUT)
  g.unique(ONNX_OUTPUT)
  const computed = new Map<string, Value>()
  const visiting = new Set<string>()
  // uint8 pixels -> float32 in [0,1]: exactly the division pixelsToFloat does.
  const pixels = () => g.node('Div', [g.node('Cast', [ONNX_INPUT], 'pixels_float', [attr('to', DT.FLOAT)]), g.scalar('pixels_scale', 255)], 'pixels_scaled')
  const resolve = (layerName: string, nodeIndex: number): Value => {
    const key = `${layerName}#${nodeIndex}`
    const done = computed.get(key)
    if (done) return done
    const layer = layers.get(layerName)
    if (!layer) throw new UserError(`model.json refers to an unknown layer ${layerName}`, {code: 'MODEL_CORRUPT', exit: 'data'})
    if (visiting.has(key)) throw new UserError(`model.json has a cycle through layer ${layerName}`, {code: 'MODEL_CORRUPT', exit: 'data'})
    visiting.add(key)
    let value: Value
    if (layer.className === 'InputLayer') {
      if (layerName !== input) throw unsupported(layer, 'a second model input')
      value = {name: options.pixelInput ? pixels() : ONNX_INPUT, shape, nchw: false}
    } else {
      const node = layer.inbound[nodeIndex]
      if (!node) throw new UserError(`model.json: layer ${layerName} has no call number ${nodeIndex}`, {code: 'MODEL_CORRUPT', exit: 'data'})
      value = convert(g, layer, node.map(([name, index]) => resolve(name, index)))
    }
    visiting.delete(key)
    computed.set(key, value)
    return value
  }
  const last = g.nhwc(resolve(output[0], output[1]))
  g.nodes.push({input: [last.name], output: [ONNX_OUTPUT], name: ONNX_OUTPUT, opType: 'Identity', attribute: []})
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport: [{domain: '', version: ONNX_OPSET}],
    producerName: 'ml',
    producerVersion: options.producerVersion,
    docString: options.docString ?? '',
    graph: {
      name: options.name,
      node: g.nodes,
      initializer: g.initializers,
      input: [valueInfo(ONNX_INPUT, shape, options.pixelInput ? DT.UINT8 : DT.FLOAT)],
      output: [valueInfo(ONNX_OUTPUT, last.shape)],
    },
    metadataProps: Object.entries(options.metadata).map(([key, value]) => ({key, value})),
  })
  return onnx.ModelProto.encode(model).finish()
}

/** Reads back the parts of an ONNX file the export writes (for checks and `ml serve`). */
export function readOnnxInfo(bytes: Uint8Array): {opset: number; producer: string; input: {name: string; dims: Array<number | string>}; output: {name: string; dims: Array<number | string>}; metadata: Record<string, string>} {
  const model = onnx.ModelProto.decode(bytes)
  const dims = (v: onnxProto.onnx.IValueInfoProto) => (v.type?.tensorType?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)))
  const input = model.graph?.input?.[0] ?? {}
  const output = model.graph?.output?.[0] ?? {}
  return {
    opset: Number(model.opsetImport.find((o) => !o.domain)?.version ?? 0),
    producer: model.producerName,
    input: {name: input.name ?? '', dims: dims(input)},
    output: {name: output.name ?? '', dims: dims(output)},
    metadata: Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value])),
  }
}
