// A TensorFlow.js layers model as an InferenceModel (whichever tfjs backend the engine chose).
import * as tf from '../../engine/tf.js'
import {loadModel} from '../artifact.js'
import type {InferenceModel} from './types.js'

export function tfjsModel(model: tf.LayersModel, inputShape: [number, number, number]): InferenceModel {
  const [h, w, c] = inputShape
  return {
    runtime: 'tfjs',
    providers: [],
    async run(input, n) {
      const out = tf.tidy(() => model.predict(tf.tensor4d(input, [n, h, w, c])) as tf.Tensor)
      const values = (await out.data()) as Float32Array
      out.dispose()
      return values
    },
    dispose: () => model.dispose(),
  }
}

/** Loads model.json + weights.bin from `dir`. */
export async function loadTfjsModel(dir: string, inputShape: [number, number, number]): Promise<InferenceModel> {
  return tfjsModel(await loadModel(dir), inputShape)
}
