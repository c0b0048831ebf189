// Builds a tf.LayersModel from a preset or an explicit layer list, and saves/loads models as
// TensorFlow.js layers-model directories (model.json + weights.bin) through the storage layer.
import * as tf from '@tensorflow/tfjs'
import type {ImageSpec, LayerConfig, ModelConfig} from '../config/schema.js'
import {joinPath, readBytes, readJson, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
import {seededDropout} from './dropout.js'
import {presetLayers} from './presets.js'
import {rngFor, withSeededRandom} from './rng.js'

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
export function modelLayers(model: ModelConfig): LayerConfig[] {
  return model.layers ?? presetLayers(model.preset ?? 'cnn-small', model.dropout)
}

/**
 * Builds the classifier: the configured layers, then dense(numClasses, softmax). Weight
 * initialisation is seeded, so the same config and seed give the same initial weights.
 */
export function buildModel(model: ModelConfig, image: ImageSpec, numClasses: number, seed: number): tf.LayersModel {
  const specs = modelLayers(model)
  const where = model.layers ? 'model.layers' : `model.preset ${model.preset}`
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

export interface SavedModelFiles {
  modelJson: Record<string, unknown>
  weights: Uint8Array
}

/** Serialises a model to tfjs layers-model artifacts (in memory). */
export async function serialiseModel(model: tf.LayersModel): Promise<SavedModelFiles> {
  let files: SavedModelFiles | undefined
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weights = artifacts.weightData ? new Uint8Array(tf.io.concatenateArrayBuffers(artifacts.weightData as ArrayBuffer | ArrayBuffer[])) : new Uint8Array()
      files = {
        modelJson: {
          format: 'layers-model',
          generatedBy: artifacts.generatedBy ?? 'TensorFlow.js',
          convertedBy: null,
          modelTopology: artifacts.modelTopology,
          weightsManifest: [{paths: ['weights.bin'], weights: artifacts.weightSpecs ?? []}],
        },
        weights,
      }
      return {modelArtifactsInfo: {dateSaved: new Date(0), modelTopologyType: 'JSON'}}
    }),
  )
  return files!
}

/** Writes model.json + weights.bin into `dir` (each file atomically). */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<void> {
  const files = await serialiseModel(model)
  await writeFileAtomic(joinPath(dir, 'weights.bin'), files.weights)
  await writeFileAtomic(joinPath(dir, 'model.json'), JSON.stringify(files.modelJson))
}

interface ModelJson {
  modelTopology: unknown
  weightsManifest: Array<{paths: string[]; weights: tf.io.WeightsManifestEntry[]}>
}

/** Loads a tfjs layers-model directory written by saveModel or `ml export --format tfjs`. */
export async function loadModel(dir: string): Promise<tf.LayersModel> {
  let json: ModelJson
  try {
    json = await readJson<ModelJson>(joinPath(dir, 'model.json'))
  } catch (error) {
    if (error instanceof UserError) throw error
    throw new UserError(`no model at ${dir} (model.json missing or unreadable)`, {
      code: 'MODEL_NOT_FOUND',
      exit: 'data',
      cause: error,
      suggestions: ['Train one with `ml train`, or point --run/--model at a run or export directory.'],
    })
  }
  const weightSpecs: tf.io.WeightsManifestEntry[] = []
  const buffers: Uint8Array[] = []
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights)
    for (const file of group.paths) buffers.push(await readBytes(joinPath(dir, file)))
  }
  const total = buffers.reduce((n, b) => n + b.byteLength, 0)
  const weightData = new Uint8Array(total)
  let offset = 0
  for (const b of buffers) {
    weightData.set(b, offset)
    offset += b.byteLength
  }
  try {
    return await tf.loadLayersModel(tf.io.fromMemory({modelTopology: json.modelTopology as object, weightSpecs, weightData: weightData.buffer}))
  } catch (error) {
    throw new UserError(`cannot load the model in ${dir}: ${(error as Error).message}`, {code: 'MODEL_CORRUPT', exit: 'data', cause: error})
  }
}
