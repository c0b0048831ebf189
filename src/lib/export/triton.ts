// The Triton Inference Server files of a model: config.pbtxt (protobuf text format of Triton's
// ModelConfig, onnxruntime_onnx platform) and labels.txt, both beside the numbered version folders.
import {UserError} from '../errors.js'

export const TRITON_FILES = {config: 'config.pbtxt', labels: 'labels.txt'} as const

export interface TritonSettings {
  maxBatchSize: number
  /** Batch sizes the dynamic batcher aims for; default [maxBatchSize]. */
  preferredBatchSize?: number[]
  maxQueueDelayMicroseconds: number
  instances: number
  kind: 'cpu' | 'gpu'
}

export interface TritonModel {
  name: string
  input: {name: string; dims: number[]}
  output: {name: string; dims: number[]}
  settings: TritonSettings
}

/** A protobuf text-format string literal. */
function quote(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`
}

const list = (values: number[]) => `[ ${values.join(', ')} ]`

/**
 * config.pbtxt. Dims leave out the batch dimension (Triton adds it when max_batch_size > 0); the
 * output names labels.txt so that Triton's classification extension can answer with class names.
 */
export function tritonConfig(model: TritonModel): string {
  const s = model.settings
  const preferred = s.preferredBatchSize?.length ? s.preferredBatchSize : [s.maxBatchSize]
  const bad = preferred.filter((b) => b > s.maxBatchSize)
  if (bad.length) {
    throw new UserError(`export.triton.preferredBatchSize ${bad.join(', ')} exceeds maxBatchSize ${s.maxBatchSize}`, {code: 'CONFIG_INVALID', exit: 'usage'})
  }
  return `name: ${quote(model.name)}
platform: "onnxruntime_onnx"
max_batch_size: ${s.maxBatchSize}
input [
  {
    name: ${quote(model.input.name)}
    data_type: TYPE_FP32${model.input.dims.length === 3 ? '\n    format: FORMAT_NHWC' : ''}
    dims: ${list(model.input.dims)}
  }
]
output [
  {
    name: ${quote(model.output.name)}
    data_type: TYPE_FP32
    dims: ${list(model.output.dims)}
    label_filename: ${quote(TRITON_FILES.labels)}
  }
]
dynamic_batching {
  preferred_batch_size: ${list(preferred)}
  max_queue_delay_microseconds: ${s.maxQueueDelayMicroseconds}
}
instance_group [
  {
    count: ${s.instances}
    kind: ${s.kind === 'gpu' ? 'KIND_GPU' : 'KIND_CPU'}
  }
]
`
}

/** labels.txt: one class name per line, line i naming output index i. */
export function tritonLabels(labels: string[]): string {
  const bad = labels.find((l) => /[\r\n]/.test(l))
  if (bad !== undefined) throw new UserError(`class name ${JSON.stringify(bad)} contains a line break, which labels.txt cannot hold`, {code: 'EXPORT_LABELS', exit: 'data'})
  return labels.join('\n') + '\n'
}
