// Builds the classifier a model config describes: a preset or an explicit layer list, then the
// softmax classifier, with seeded weight initialisation.
import * as tf from '../engine/tf.js'
import {defaultPreset, type ImageSpec, type LayerConfig, type ModelConfig} from '../config/schema.js'
import {UserError} from '../errors.js'
import {seededDropout} from './dropout.js'
import {presetLayers} from './presets.js'
import {rngFor, withSeededRandom} from '../train/rng.js'

type LayerFactory = (args: Record<string, unknown>) => tf.layers.Layer

function layerFactory(type: string, where: string): LayerFactory {
  // Dropout masks must not depend on how a batch is split across workers (see dropout.ts).
  if (type === 'dropout') return seededDropout as unknown as LayerFactory
  const factory = (tf.layers as unknown as Record<string, unknown>)[type]
  if (typeof factory !== 'function' || type === 'input' || type.startsWith('_')) {
    throw new UserError(`${where}: unknown layer type "${type}"`, {
      code: 'MODEL_INVALID',
      exit: 'usage',
      suggestions: ['Use a tf.layers name in camelCase: conv2d, depthwiseConv2d, separableConv2d, maxPooling2d, dense, dropout, flatten, batchNormalization, ...'],
    })
  }
  return factory as LayerFactory
}

/** The layer list a model config stands for (hidden layers; the classifier is added by buildModel). */
export function modelLayers(model: ModelConfig, image: {width: number; height: number} = {width: 28, height: 28}): LayerConfig[] {
  return model.layers ?? presetLayers(model.preset ?? defaultPreset(image), model.dropout)
}

/**
 * Builds the classifier: the configured layers, then dense(numClasses, softmax). Weight
 * initialisation is seeded, so the same config and seed give the same initial weights.
 */
export function buildModel(model: ModelConfig, image: ImageSpec, numClasses: number, seed: number): tf.LayersModel {
  const specs = modelLayers(model, image)
  const where = model.layers ? 'model.layers' : `model.preset ${model.preset ?? defaultPreset(image)}`
  return withSeededRandom(rngFor(seed, 'init'), () => {
    const net = tf.sequential({name: 'classifier'})
    net.add(tf.layers.inputLayer({inputShape: [image.height, image.width, image.channels], name: 'image'}))
    specs.forEach((spec, i) => {
      const {type, ...args} = spec
      const path = model.layers ? `${where}[${i}]` : where
      // Stable layer names: dropout masks are keyed by them, and they read well in exported graphs.
      if (args.name === undefined) args.name = `${type.replace(/[^a-zA-Z0-9]/g, '').toLowerCase()}_${i + 1}`
      try {
        net.add(layerFactory(type, `${path}.type`)(args))
      } catch (error) {
        if (error instanceof UserError) throw error
        throw new UserError(`${path} (${type}): ${(error as Error).message}`, {code: 'MODEL_INVALID', exit: 'usage', cause: error})
      }
    })
    // Flatten automatically when the configured layers end on a spatial tensor.
    if ((net.outputs[0]!.shape.length ?? 2) > 2) net.add(tf.layers.flatten())
    net.add(tf.layers.dense({units: numClasses, activation: 'softmax', name: 'probabilities'}))
    return net
  })
}

export function countParams(model: tf.LayersModel): number {
  return model.countParams()
}
