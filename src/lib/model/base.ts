// A pretrained base network (model.base): loaded from its files, cut at its feature layer, checked
// against data.image, and frozen or partly unfrozen. Layers models become part of the classifier's
// graph; graph models are used frozen, as feature extractors.
import * as tf from '../engine/tf.js'
import type {BaseConfig, ImageSpec} from '../config/schema.js'
import {UserError} from '../errors.js'
import {fetchBase, type BaseFiles, type BaseModelJson} from './base-source.js'
import {GraphBase, graphSpec} from './graph-base.js'

export type InputShape = [number, number, number]

export interface LoadedBase {
  kind: 'layers' | 'graph'
  source: string
  /** sha256 of model.json + weights: the base's identity in pins and feature-cache keys. */
  sha256: string
  /** [height, width, channels] the base takes. */
  inputShape: InputShape
  /** The layer or node the features are taken from. */
  output: string
  /** Length of one example's feature vector (spatial outputs are average-pooled). */
  featureSize: number
  inputRange: [number, number]
  /**
   * image (already in inputRange) -> features at `output`. Layers bases: sharing the base's layers;
   * graph bases: one frozen GraphBase layer that runs the graph (so the classifier stays a layers model).
   */
  features?: tf.LayersModel
  /** Graph bases: the graph model. */
  graph?: tf.GraphModel
  /** Features of images in [0,1] (inference mode): the input range is applied here. */
  extract(images: tf.Tensor4D): tf.Tensor2D
  dispose(): void
}

const POOLING = new Set(['GlobalAveragePooling2D', 'GlobalMaxPooling2D', 'AveragePooling2D', 'MaxPooling2D', 'GlobalAveragePooling1D', 'GlobalMaxPooling1D'])
const GLOBAL_POOLING = new Set(['GlobalAveragePooling2D', 'GlobalMaxPooling2D'])

function isGraphModel(json: BaseModelJson): boolean {
  return json.format === 'graph-model' || Array.isArray((json.modelTopology as {node?: unknown}).node)
}

function weightSpecs(json: BaseModelJson): tf.io.WeightsManifestEntry[] {
  return json.weightsManifest.flatMap((g) => g.weights) as tf.io.WeightsManifestEntry[]
}

function artifacts(files: BaseFiles): tf.io.ModelArtifacts {
  const {modelJson} = files
  const weightData = files.weights.buffer.slice(files.weights.byteOffset, files.weights.byteOffset + files.weights.byteLength) as ArrayBuffer
  return {
    modelTopology: modelJson.modelTopology,
    weightSpecs: weightSpecs(modelJson),
    weightData,
    format: modelJson.format,
    generatedBy: modelJson.generatedBy as string | undefined,
    convertedBy: modelJson.convertedBy as string | undefined,
    signature: modelJson.signature as object | undefined,
    userDefinedMetadata: modelJson.userDefinedMetadata as Record<string, object> | undefined,
    modelInitializer: modelJson.modelInitializer as object | undefined,
  }
}

function rank(layer: tf.layers.Layer): number {
  const shape = layer.outputShape
  return Array.isArray(shape[0]) ? (shape[0] as number[]).length : (shape as number[]).length
}

function inboundLayers(layer: tf.layers.Layer): tf.layers.Layer[] {
  const node = (layer as unknown as {inboundNodes: Array<{inboundLayers: tf.layers.Layer[]}>}).inboundNodes[0]
  return node?.inboundLayers ?? []
}

/**
 * `auto`: the last layer that yields pooled features, a global pooling layer or a flatten/reshape of a
 * pooling layer's output (Keras applications end their feature part this way).
 */
export function autoCutLayer(model: tf.LayersModel): tf.layers.Layer | undefined {
  for (let i = model.layers.length - 1; i >= 0; i--) {
    const layer = model.layers[i]!
    const cls = layer.getClassName()
    if (rank(layer) !== 2) continue
    if (GLOBAL_POOLING.has(cls)) return layer
    if ((cls === 'Flatten' || cls === 'Reshape') && inboundLayers(layer).some((l) => POOLING.has(l.getClassName()))) return layer
  }
  return undefined
}

function noSuchOutput(source: string, output: string, names: string[]): UserError {
  return new UserError(`model.base.output: the base ${source} has no layer or node "${output}"`, {
    code: 'BASE_OUTPUT_NOT_FOUND',
    exit: 'usage',
    details: {output, last: names.slice(-10)},
    suggestions: [`Use auto, or one of its last layers: ${names.slice(-6).join(', ')}.`],
  })
}

/** Checks the base's input against data.image; returns the shape both agree on. */
export function checkInputSize(declared: Array<number | null | undefined>, config: BaseConfig, image: ImageSpec): InputShape {
  const [h, w, c] = declared.slice(-3).map((d) => (typeof d === 'number' && d > 0 ? d : undefined))
  const size = config.inputSize
  const expected: InputShape = [h ?? size?.[0] ?? image.height, w ?? size?.[1] ?? image.width, c ?? 3]
  const conflict =
    (size && ((h !== undefined && h !== size[0]) || (w !== undefined && w !== size[1]))) ||
    expected[0] !== image.height ||
    expected[1] !== image.width ||
    expected[2] !== image.channels
  if (conflict) {
    const declaredText = `${h ?? '?'}x${w ?? '?'}x${c ?? '?'}`
    throw new UserError(
      `model.base (${config.source}) expects ${expected.join('x')} images${size ? ` (model.base.inputSize ${size.join('x')}, model.json ${declaredText})` : ''}, but data.image is ${image.height}x${image.width}x${image.channels}`,
      {
        code: 'BASE_INPUT_MISMATCH',
        exit: 'usage',
        details: {base: expected, image: [image.height, image.width, image.channels]},
        suggestions: [`Set data.image to {height: ${expected[0]}, width: ${expected[1]}, channels: ${expected[2]}} and run \`ml ingest\` again, or pick a base made for ${image.height}x${image.width}x${image.channels}.`],
      },
    )
  }
  return expected
}

/** Scales images from [0,1] to the base's input range. */
export function toInputRange(images: tf.Tensor4D, range: [number, number]): tf.Tensor4D {
  if (range[0] === 0 && range[1] === 1) return images
  return tf.tidy(() => tf.add(tf.mul(images, range[1] - range[0]), range[0]) as tf.Tensor4D)
}

/** Base layers with weights, bottom to top: what `trainable: N` and `fineTune.unfreeze: N` count. */
export function weightedLayers(layers: tf.layers.Layer[]): tf.layers.Layer[] {
  return layers.filter((l) => l.getClassName() !== 'InputLayer' && l.weights.length > 0)
}

/** Freezes the base's layers, then unfreezes all (true) or the top N layers that have weights. */
export function setTrainable(layers: tf.layers.Layer[], trainable: boolean | number): string[] {
  const weighted = weightedLayers(layers)
  const count = trainable === true ? weighted.length : trainable === false ? 0 : Math.min(trainable, weighted.length)
  for (const layer of layers) layer.trainable = false
  const unfrozen = weighted.slice(weighted.length - count)
  for (const layer of unfrozen) layer.trainable = true
  return unfrozen.map((l) => l.name)
}

async function loadLayersBase(files: BaseFiles, config: BaseConfig, image: ImageSpec): Promise<LoadedBase> {
  let model: tf.LayersModel
  try {
    model = await tf.loadLayersModel(tf.io.fromMemory(artifacts(files)))
  } catch (error) {
    throw new UserError(`cannot load the base ${config.source}: ${(error as Error).message}`, {code: 'BASE_INVALID', exit: 'data', cause: error})
  }
  if (model.inputs.length !== 1) throw new UserError(`the base ${config.source} has ${model.inputs.length} inputs; a base takes one image`, {code: 'BASE_INVALID', exit: 'usage'})
  const inputShape = checkInputSize(model.inputs[0]!.shape, config, image)
  const names = model.layers.map((l) => l.name)
  let layer: tf.layers.Layer | undefined
  if (config.output === 'auto') {
    layer = autoCutLayer(model)
    if (!layer) {
      throw new UserError(`model.base.output: auto found no pooled feature layer in ${config.source}`, {
        code: 'BASE_OUTPUT_NOT_FOUND',
        exit: 'usage',
        suggestions: [`Name the layer to cut at (its last layers: ${names.slice(-6).join(', ')}).`],
      })
    }
  } else {
    layer = model.layers.find((l) => l.name === config.output)
    if (!layer) throw noSuchOutput(config.source, config.output, names)
  }
  const features = tf.model({inputs: model.inputs, outputs: layer.output as tf.SymbolicTensor, name: 'base'})
  setTrainable(features.layers, config.trainable)
  const outShape = features.outputs[0]!.shape
  const featureSize = outShape[outShape.length - 1]!
  if (outShape.length !== 2 && outShape.length !== 4) {
    throw new UserError(`model.base.output: "${layer.name}" gives a rank-${outShape.length} tensor; cut at an image-shaped or flat layer`, {code: 'BASE_OUTPUT_NOT_FOUND', exit: 'usage'})
  }
  const range = config.inputRange as [number, number]
  return {
    kind: 'layers',
    source: config.source,
    sha256: files.sha256,
    inputShape,
    output: layer.name,
    featureSize,
    inputRange: range,
    features,
    extract(images) {
      return tf.tidy(() => {
        const out = features.apply(toInputRange(images, range), {training: false}) as tf.Tensor
        return (out.rank === 4 ? tf.mean(out, [1, 2]) : out) as tf.Tensor2D
      })
    },
    dispose() {
      model.dispose()
    },
  }
}

async function loadGraphBase(files: BaseFiles, config: BaseConfig, image: ImageSpec): Promise<LoadedBase> {
  // Taken before loading: loading rewrites parts of the topology object in place.
  const spec = graphSpec(artifacts(files))
  let graph: tf.GraphModel
  try {
    graph = await tf.loadGraphModel(tf.io.fromMemory(artifacts(files)))
  } catch (error) {
    throw new UserError(`cannot load the graph-model base ${config.source}: ${(error as Error).message}`, {code: 'BASE_INVALID', exit: 'data', cause: error})
  }
  if (config.trainable !== false) {
    throw new UserError(`model.base.trainable: ${config.source} is a graph model, which has no trainable layers`, {
      code: 'BASE_NOT_TRAINABLE',
      exit: 'usage',
      suggestions: ['Set model.base.trainable: false, or use the layers-model version of the network to fine-tune it.'],
    })
  }
  if (graph.inputs.length !== 1) throw new UserError(`the base ${config.source} has ${graph.inputs.length} inputs; a base takes one image`, {code: 'BASE_INVALID', exit: 'usage'})
  const inputShape = checkInputSize(graph.inputs[0]!.shape ?? [], config, image)
  const nodes = Object.keys((graph as unknown as {executor: {graph: {nodes: Record<string, unknown>}}}).executor.graph.nodes)
  const output = config.output === 'auto' ? graph.outputs[0]!.name : config.output
  if (config.output !== 'auto' && !nodes.includes(output.replace(/:\d+$/, ''))) throw noSuchOutput(config.source, output, nodes)
  const range = config.inputRange as [number, number]
  const run = (images: tf.Tensor4D): tf.Tensor2D =>
    tf.tidy(() => {
      const out = graph.execute(toInputRange(images, range), output) as tf.Tensor
      if (out.rank === 4) return tf.mean(out, [1, 2]) as tf.Tensor2D
      if (out.rank !== 2) throw new UserError(`model.base.output: node "${output}" gives a rank-${out.rank} tensor; cut at an image-shaped or flat node`, {code: 'BASE_OUTPUT_NOT_FOUND', exit: 'usage'})
      return out as tf.Tensor2D
    })
  // The feature size of a graph is known once it has run: one probe image.
  const probe = tf.zeros([1, ...inputShape]) as tf.Tensor4D
  const probed = run(probe)
  const featureSize = probed.shape[1]
  tf.dispose([probe, probed])
  const input = tf.input({shape: inputShape, name: 'base_input'})
  const layer = new GraphBase({graph: spec, output, featureSize, name: 'graph_base'})
  const features = tf.model({inputs: input, outputs: layer.apply(input) as tf.SymbolicTensor, name: 'base'})
  let disposed = false
  return {
    kind: 'graph',
    source: config.source,
    sha256: files.sha256,
    inputShape,
    output,
    featureSize,
    inputRange: range,
    graph,
    features,
    extract: run,
    dispose() {
      // Once: a replica restored from a checkpoint disposes its base early, and again when it closes.
      if (disposed) return
      disposed = true
      graph.dispose()
      features.dispose()
    },
  }
}

/** Fetches (or finds in the cache), checks and loads the configured base. */
export async function loadBase(config: BaseConfig, image: ImageSpec, options: {cacheRoot?: string} = {}): Promise<LoadedBase> {
  const files = await fetchBase(config.source, {sha256: config.sha256, cacheRoot: options.cacheRoot})
  return isGraphModel(files.modelJson) ? loadGraphBase(files, config, image) : loadLayersBase(files, config, image)
}
