// The classifier on top of a pretrained base (model.head), and the whole network as one graph:
// image -> [input range] -> base layers -> [pooling] -> head -> probabilities. One graph is what is
// saved, exported (tfjs, ONNX) and served; the base and head sub-models share its layers, so training
// can run the base in inference mode (or skip it, with cached features) and update the same weights.
import * as tf from '../engine/tf.js'
import type {HeadConfig} from '../config/schema.js'
import {UserError} from '../errors.js'
import {seededDropout} from './dropout.js'
import {setTrainable, weightedLayers, type LoadedBase} from './base.js'
import {rngFor, withSeededRandom} from '../train/rng.js'

/** Layer names the builder gives the parts it adds around the base. */
export const TRANSFER_LAYERS = {input: 'image', inputRange: 'base_input_range', pool: 'base_pool', headPrefix: 'head_', output: 'probabilities'} as const

export interface TransferModel {
  /** image -> probabilities: the one graph that is saved and exported. */
  model: tf.LayersModel
  /** image -> features (the base, with the input range and pooling). */
  features: tf.LayersModel
  /** features -> probabilities. */
  head: tf.LayersModel
  featureSize: number
  /** The base's layers inside `model` (not the added input-range or pooling layers). */
  baseLayers: tf.layers.Layer[]
}

type Node = {inputTensors: tf.SymbolicTensor[]; outputTensors: tf.SymbolicTensor[]}

/**
 * Calls the layers of `net` again on `input`, so that they become part of the caller's graph rather
 * than a nested model (which neither the ONNX exporter nor other runtimes flatten).
 */
function rewire(net: tf.LayersModel, input: tf.SymbolicTensor): tf.SymbolicTensor {
  const map = new Map<number, tf.SymbolicTensor>()
  map.set(net.inputs[0]!.id, input)
  for (const layer of net.layers) {
    if (layer.getClassName() === 'InputLayer') continue
    const nodes = (layer as unknown as {inboundNodes: Node[]}).inboundNodes
    if (nodes.length !== 1) throw new UserError(`the base's layer ${layer.name} is shared (called ${nodes.length} times); such bases are not supported`, {code: 'BASE_INVALID', exit: 'usage'})
    const node = nodes[0]!
    const inputs = node.inputTensors.map((t) => map.get(t.id)!)
    const out = layer.apply(inputs.length === 1 ? inputs[0]! : inputs) as tf.SymbolicTensor | tf.SymbolicTensor[]
    const outs = Array.isArray(out) ? out : [out]
    node.outputTensors.forEach((t, i) => map.set(t.id, outs[i]!))
  }
  return map.get(net.outputs[0]!.id)!
}

function headLayers(head: HeadConfig, numClasses: number): tf.layers.Layer[] {
  const layers: tf.layers.Layer[] = []
  const {headPrefix: p} = TRANSFER_LAYERS
  head.hidden.forEach((units, i) => {
    if (head.dropout > 0) layers.push(seededDropout({rate: head.dropout, name: `${p}dropout_${i + 1}`}))
    layers.push(tf.layers.dense({units, activation: 'relu', name: `${p}dense_${i + 1}`}))
  })
  if (head.dropout > 0) layers.push(seededDropout({rate: head.dropout, name: `${p}dropout_out`}))
  layers.push(tf.layers.dense({units: numClasses, activation: 'softmax', name: TRANSFER_LAYERS.output}))
  return layers
}

function chain(layers: tf.layers.Layer[], x: tf.SymbolicTensor): tf.SymbolicTensor {
  return layers.reduce((t, l) => l.apply(t) as tf.SymbolicTensor, x)
}

function headModel(layers: tf.layers.Layer[], featureSize: number): tf.LayersModel {
  const input = tf.input({shape: [featureSize], name: 'features'})
  return tf.model({inputs: input, outputs: chain(layers, input), name: 'head'})
}

/** The classifier on a layers base: one graph, head weights seeded from `seed`. */
export function buildTransferModel(base: LoadedBase, head: HeadConfig, numClasses: number, seed: number): TransferModel {
  if (!base.features) throw new UserError(`model.base: ${base.source} has no feature model`, {code: 'BASE_INVALID', exit: 'usage'})
  const image = tf.input({shape: base.inputShape, name: TRANSFER_LAYERS.input})
  let x: tf.SymbolicTensor = image
  const [lo, hi] = base.inputRange
  if (lo !== 0 || hi !== 1) x = tf.layers.rescaling({scale: hi - lo, offset: lo, name: TRANSFER_LAYERS.inputRange}).apply(x) as tf.SymbolicTensor
  let features = rewire(base.features, x)
  if (features.shape.length === 4) features = tf.layers.globalAveragePooling2d({name: TRANSFER_LAYERS.pool}).apply(features) as tf.SymbolicTensor
  const featureSize = features.shape[1]!
  // Weights are created when a layer is first called, so the call happens under the seeded generator.
  // The full graph first: in a saved model the head layers' first call is this one.
  const {layers, model} = withSeededRandom(rngFor(seed, 'init'), () => {
    const layers = headLayers(head, numClasses)
    return {layers, model: tf.model({inputs: image, outputs: chain(layers, features), name: 'classifier'})}
  })
  return {
    model,
    features: tf.model({inputs: image, outputs: features, name: 'features'}),
    head: headModel(layers, featureSize),
    featureSize,
    baseLayers: base.features.layers.filter((l) => l.getClassName() !== 'InputLayer'),
  }
}

const isHeadLayer = (l: tf.layers.Layer) => l.name.startsWith(TRANSFER_LAYERS.headPrefix) || l.name === TRANSFER_LAYERS.output

/** Splits a saved transfer model (from a checkpoint) back into its parts. */
export function splitTransferModel(model: tf.LayersModel): TransferModel {
  const layers = model.layers.filter(isHeadLayer)
  const first = layers[0]
  if (!first) throw new UserError(`the model has no head layers (${TRANSFER_LAYERS.headPrefix}* / ${TRANSFER_LAYERS.output}); it was not built on model.base`, {code: 'CHECKPOINT_INVALID', exit: 'training'})
  const features = first.getInputAt(0) as tf.SymbolicTensor
  const featureSize = features.shape[1]!
  const added = new Set<string>([TRANSFER_LAYERS.inputRange, TRANSFER_LAYERS.pool])
  return {
    model,
    features: tf.model({inputs: model.inputs, outputs: features, name: 'features'}),
    head: headModel(layers, featureSize),
    featureSize,
    baseLayers: model.layers.filter((l) => l.getClassName() !== 'InputLayer' && !isHeadLayer(l) && !added.has(l.name)),
  }
}

/** Sets which base layers train (false, true, or the top N with weights); the head always trains. */
export function setBaseTrainable(transfer: TransferModel, trainable: boolean | number): string[] {
  const names = setTrainable(transfer.baseLayers, trainable)
  for (const layer of transfer.model.layers) if (isHeadLayer(layer)) layer.trainable = true
  return names
}

/** Whether any base layer trains (then features cannot be cached). */
export function baseIsFrozen(transfer: TransferModel): boolean {
  return weightedLayers(transfer.baseLayers).every((l) => !l.trainable)
}
