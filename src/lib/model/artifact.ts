// The model artifact: a TensorFlow.js layers-model directory (model.json + weights.bin), serialised,
// saved and loaded through the storage layer. Train writes it; export, serve, predict and monitor read it.
import * as tf from '../engine/tf.js'
import {joinPath, readBytes, readJson, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
// Registers the layer that carries a graph-model base, so that models trained on one load anywhere.
import './graph-base.js'

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
