// The TensorFlow.js layers format of the model repository (model.json + weights.bin), optionally
// with quantized kernels.
import {quantizeArtifacts, type ModelJson, type QuantizeMode} from './quantize.js'

export interface TfjsArtifacts {
  modelJson: ModelJson
  /** The model.json file content. */
  json: Uint8Array | string
  weights: Uint8Array
  /** Names of the quantized weights (empty without quantization). */
  quantized: string[]
}

/**
 * The tfjs files of a run's model. Unquantized, the run's own bytes are kept as they are, so an
 * export is byte-identical to what training saved.
 */
export function tfjsArtifacts(modelJsonBytes: Uint8Array, weights: Uint8Array, mode: QuantizeMode): TfjsArtifacts {
  const modelJson = JSON.parse(Buffer.from(modelJsonBytes).toString('utf8')) as ModelJson
  return quantizeTfjs({modelJson, json: modelJsonBytes, weights, quantized: []}, mode)
}

/** The same model with its kernels quantized (model.json written compactly, as saveModel does). */
export function quantizeTfjs(original: TfjsArtifacts, mode: QuantizeMode): TfjsArtifacts {
  if (mode === 'none') return original
  const q = quantizeArtifacts(original.modelJson, original.weights, mode)
  return {modelJson: q.modelJson, json: JSON.stringify(q.modelJson), weights: q.weights, quantized: q.quantized}
}
