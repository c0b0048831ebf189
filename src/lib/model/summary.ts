// `ml train --summary`: the model a config builds, layer by layer, as Keras prints it (tfjs's own
// model.summary does the text), plus the same facts as data for --json.
import type * as tf from '../engine/tf.js'
import type {ImageSpec, ModelConfig} from '../config/schema.js'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import {readManifest} from '../data/store.js'
import {buildModel} from './build.js'

export interface LayerSummary {
  name: string
  type: string
  /** Output shape without the batch dimension's size (null). */
  outputShape: Array<number | null>
  params: number
}

export interface ModelSummary {
  layers: LayerSummary[]
  totalParams: number
  trainableParams: number
  nonTrainableParams: number
  inputShape: number[]
  classes: number
  /** Keras-style text table. */
  text: string
}

const paramsOf = (weights: tf.LayerVariable[]) => weights.reduce((n, w) => n + w.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0)

/** Builds the model (seeded, not trained) and describes it. */
export function summarizeModel(model: ModelConfig, image: ImageSpec, classes: number, seed: number): ModelSummary {
  const net = buildModel(model, image, classes, seed)
  try {
    const lines: string[] = []
    net.summary(100, undefined, (line: string) => lines.push(line))
    const layers = net.layers.map((layer) => {
      const shape = layer.outputShape
      return {
        name: layer.name,
        type: layer.getClassName(),
        outputShape: (Array.isArray(shape[0]) ? shape[0] : shape) as Array<number | null>,
        params: layer.countParams(),
      }
    })
    return {
      layers,
      totalParams: net.countParams(),
      trainableParams: paramsOf(net.trainableWeights),
      nonTrainableParams: paramsOf(net.nonTrainableWeights),
      inputShape: [image.height, image.width, image.channels],
      classes,
      text: lines.join('\n'),
    }
  } finally {
    net.dispose()
  }
}

/** The model `ml train` would build for a config: classes from the dataset store, input from data.image. */
export async function summarizeTrainingModel(loaded: LoadedConfig): Promise<ModelSummary & {store: string}> {
  const store = resolvePath(loaded, loaded.config.data.store)
  const manifest = await readManifest(store)
  const {config} = loaded
  return {...summarizeModel(config.model, config.data.image, manifest.classes.length, config.train.seed), store}
}
