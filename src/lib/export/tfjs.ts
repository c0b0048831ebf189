// The TensorFlow.js layers format of the model repository (model.json + weights.bin), optionally
// with quantized kernels, plus the repository's file names and version listing shared by all formats.
import {joinPath, listNames} from '../storage/index.js'
import {quantizeArtifacts, type ModelJson, type QuantizeMode} from './quantize.js'

export const MODEL_FILES = {
  modelJson: 'model.json',
  weights: 'weights.bin',
  onnx: 'model.onnx',
  labels: 'labels.json',
  preprocessing: 'preprocessing.json',
  card: 'model-card.json',
  cardMarkdown: 'MODEL_CARD.md',
} as const

export type {ExportOptions, ExportResult} from './index.js'

/** Numeric version folders of a model in the repository, ascending. */
export async function listVersions(repoDir: string, name: string): Promise<number[]> {
  return (await listNames(joinPath(repoDir, name)))
    .filter((n) => /^[1-9][0-9]*$/.test(n))
    .map(Number)
    .sort((a, b) => a - b)
}

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

/** Writes the tfjs format only (the export before other formats existed); see runExport. */
export async function exportTfjs(options: import('./index.js').ExportOptions): Promise<import('./index.js').ExportResult> {
  const {runExport} = await import('./index.js')
  return runExport({...options, formats: ['tfjs']})
}
