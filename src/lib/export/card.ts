// The model card every export carries: model-card.json (machine-readable) and MODEL_CARD.md.
// Everything in it comes from the run and the exported bytes, never from the clock, so re-exports match.
import {createHash} from 'node:crypto'
import {createRequire} from 'node:module'
import type {EpochMetrics, RunInfo} from '../model/run-dir.js'
import type {QuantizeMode} from './quantize.js'

export interface CardFile {
  /** Relative to the version folder (`../config.pbtxt` for model-level Triton files). */
  path: string
  bytes: number
  sha256: string
}

export interface CardFormat {
  format: string
  files: CardFile[]
  bytes: number
  quantization: QuantizeMode
  /** Test-split accuracy of this artifact, null when not measured. */
  accuracy: number | null
  /** accuracy minus the unquantized tfjs model's. */
  accuracyDelta: number | null
  details?: Record<string, unknown>
}

export interface CardEvaluation {
  split: 'test'
  count: number
  /** The dataset manifest the test split was read from (it may have grown since training). */
  datasetVersion: number | null
  datasetFingerprint: string | null
  /** The unquantized tfjs model, the reference of accuracyDelta. */
  accuracy: number | null
  loss: number | null
  note?: string
}

export interface CardInputs {
  name: string
  info: RunInfo
  labels: string[]
  preprocessing: Record<string, unknown> & {height: number; width: number; channels: number}
  runConfig: unknown
  metrics: EpochMetrics[]
  /** evaluation.json of the run, when `ml evaluate` wrote one. */
  evaluation?: {loss?: number; accuracy?: number}
  quantization: {mode: QuantizeMode; weights: string[]}
  evaluated: CardEvaluation
  formats: CardFormat[]
}

export function sha256(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex')
}

export function cardFile(path: string, data: Uint8Array | string): CardFile {
  return {path, bytes: typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength, sha256: sha256(data)}
}

let version: string | undefined
export function toolkitVersion(): string {
  version ??= (createRequire(import.meta.url)('../../../../package.json') as {version: string}).version
  return version
}

export function buildCard(c: CardInputs) {
  const {info, preprocessing} = c
  const test =
    c.evaluation?.accuracy !== undefined
      ? {loss: c.evaluation.loss, accuracy: c.evaluation.accuracy}
      : c.evaluated.accuracy === null
        ? undefined
        : {loss: c.evaluated.loss, accuracy: c.evaluated.accuracy}
  return {
    name: c.name,
    runId: info.runId,
    task: 'image-classification',
    toolkit: {name: 'ml', version: toolkitVersion()},
    input: {
      name: 'image',
      dtype: 'float32',
      layout: 'NHWC',
      shape: [null, preprocessing.height, preprocessing.width, preprocessing.channels],
      ...preprocessing,
    },
    output: {name: 'probabilities', dtype: 'float32', shape: [null, c.labels.length], labels: c.labels},
    labels: c.labels,
    dataset: info.dataset,
    training: {
      backend: info.backend,
      workers: info.workers,
      seed: info.seed,
      epochs: info.epochsCompleted,
      params: info.params,
      startedAt: info.createdAt,
      finishedAt: info.updatedAt,
      config: c.runConfig,
    },
    metrics: {
      train: info.final ? {loss: info.final.loss, accuracy: info.final.accuracy} : undefined,
      validation: info.final?.valLoss === undefined ? undefined : {loss: info.final.valLoss, accuracy: info.final.valAccuracy},
      test,
      history: c.metrics.map(({epoch, loss, accuracy, valLoss, valAccuracy}) => ({epoch, loss, accuracy, valLoss, valAccuracy})),
    },
    trainedAt: info.updatedAt,
    quantization: {
      mode: c.quantization.mode,
      scope: c.quantization.mode === 'none' ? null : 'kernels (weights of rank >= 2); biases and batch-norm statistics stay float32',
      weights: c.quantization.weights,
    },
    evaluation: c.evaluated,
    formats: c.formats,
  }
}

export type ModelCard = ReturnType<typeof buildCard>

const fixed = (v: number | null | undefined, digits = 4) => (v === null || v === undefined ? '-' : v.toFixed(digits))
const signed = (v: number | null) => (v === null ? '-' : `${v >= 0 ? '+' : ''}${v.toFixed(4)}`)

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`
  return `${(bytes / 1024 / 1024).toFixed(2)} MiB`
}

export function cardMarkdown(card: ModelCard): string {
  const m = card.metrics
  const p = card.input as unknown as {height: number; width: number; channels: number; fit: string; scale: number; offset: number}
  const row = (split: string, v?: {accuracy?: number}) => `| ${split} | ${fixed(v?.accuracy)} |`
  const formats = card.formats
    .map((f) => `| ${f.format} | ${f.files.map((x) => `\`${x.path}\``).join(', ')} | ${size(f.bytes)} | ${f.quantization} | ${fixed(f.accuracy)} | ${signed(f.accuracyDelta)} |`)
    .join('\n')
  const scaling = Math.abs(p.scale - 1 / 255) < 1e-12 && p.offset === 0 ? 'pixels scaled by 1/255' : `pixels * ${p.scale} + ${p.offset}`
  const evaluated = card.evaluation.note ?? `${card.evaluation.count} test images of dataset version ${card.evaluation.datasetVersion}`
  return `# Model card: ${card.name}

- Run: \`${card.runId}\`, trained ${card.trainedAt} with ml ${card.toolkit.version} on the ${card.training.backend} backend
- Architecture: ${card.training.params.toLocaleString('en-US')} parameters, ${card.training.epochs} epoch${card.training.epochs === 1 ? '' : 's'}, seed ${card.training.seed}
- Input: \`image\`, float32 NHWC [batch, ${p.height}, ${p.width}, ${p.channels}], resized with fit=${p.fit}, ${scaling}
- Output: \`probabilities\` over ${card.output.labels.length} classes: ${card.output.labels.join(', ')}
- Dataset: version ${card.dataset.version}, fingerprint \`${card.dataset.fingerprint.slice(0, 16)}\`
- Quantization: ${card.quantization.mode}${card.quantization.scope ? ` (${card.quantization.scope})` : ''}

| split | accuracy |
|---|---|
${row('train', m.train)}
${row('validation', m.validation)}
${row('test', m.test)}

## Exported formats

Accuracy measured on ${evaluated}; delta against the unquantized TensorFlow.js model.

| format | files | size | quantization | test accuracy | delta |
|---|---|---|---|---|---|
${formats}
`
}
