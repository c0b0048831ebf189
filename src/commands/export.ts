import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'

export default class Export extends MlCommand {
  static override summary = 'Write a trained model into the model repository (tfjs, ONNX, Triton).'
  static override description = `Exports a run (default: the latest) to <export.dir>/<name>/<version>/ with labels.json, preprocessing.json and a model card (model-card.json, MODEL_CARD.md), in the formats asked for:
  tfjs    model.json + weights.bin (TensorFlow.js layers model)
  onnx    model.onnx (opset 13, input "image" NHWC float32 [batch,H,W,C], output "probabilities")
  triton  model.onnx plus <name>/config.pbtxt and <name>/labels.txt for Triton Inference Server
--quantize float16|uint8 stores the kernels quantized in every format. Each format's accuracy is measured on the dataset's test split (tfjs with TensorFlow.js, ONNX with onnxruntime) and reported with its change against the unquantized model. Versions are numbered 1, 2, ...; re-exporting an unchanged run does not create a new version.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> export',
    '<%= config.bin %> export --format tfjs,onnx,triton --quantize uint8',
    '<%= config.bin %> export --run mnist-20261124-101500 --dir ./models --json',
  ]

  static override flags = {
    run: Flags.string({summary: 'Run id or run directory (default: the latest run).', env: 'ML_RUN'}),
    format: Flags.string({summary: 'Formats, comma-separated: tfjs, onnx, triton (default: export.formats).'}),
    quantize: Flags.string({summary: 'Weight quantization (default: export.quantize).', options: ['none', 'float16', 'uint8']}),
    dir: Flags.string({summary: 'Model repository directory (overrides export.dir).', env: 'ML_EXPORT_DIR'}),
    version: Flags.integer({summary: 'Version number to write (default: next).', min: 1}),
    to: Flags.string({summary: 'Then register the version in a model registry: vertex (Vertex AI, uses train.vertex; export.dir must be gs://) or sagemaker (a SageMaker Model, uses train.sagemaker).', options: ['vertex', 'sagemaker']}),
  }

  async run() {
    const {flags} = await this.parse(Export)
    const {parseFormats, parseQuantize, runExport} = await import('../lib/export/index.js')
    const formats = flags.format === undefined ? undefined : parseFormats(flags.format)
    const quantize = flags.quantize === undefined ? undefined : parseQuantize(flags.quantize)
    const loaded = await this.loadConfig(flags.config, {'export.dir': flags.dir})
    const result = await runExport({loaded, run: flags.run, version: flags.version, formats, quantize, onProgress: (m) => this.note(m)})
    this.say(
      result.unchanged
        ? `${result.name} version ${result.version} already holds run ${result.runId}: nothing to write (${result.dir})`
        : `exported run ${result.runId} as ${result.name} version ${result.version} to ${result.dir}`,
    )
    const kb = (n: number) => `${(n / 1024).toFixed(1)} KiB`
    for (const f of result.formats) {
      const size = f.quantization === 'none' ? kb(f.bytes) : `${kb(f.bytes)} (${f.quantization}; ${kb(f.unquantizedBytes)} unquantized)`
      const accuracy = f.accuracy === null ? 'accuracy not measured' : `test accuracy ${f.accuracy.toFixed(4)} (${f.accuracyDelta! >= 0 ? '+' : ''}${f.accuracyDelta!.toFixed(4)})`
      this.say(`  ${f.format.padEnd(7)} ${size}, ${accuracy}`)
    }
    for (const note of result.notes) this.say(`  note: ${note}`)
    if (flags.to === 'sagemaker') {
      const {registerInSageMaker} = await import('../lib/export/sagemaker.js')
      const sagemaker = await registerInSageMaker(loaded, result, {onProgress: (m) => this.note(m)})
      this.say(`registered in SageMaker as model ${sagemaker.model} (${sagemaker.modelData})`)
      return {...result, sagemaker}
    }
    if (flags.to === 'vertex') {
      const {uploadToVertex} = await import('../lib/export/vertex.js')
      const vertex = await uploadToVertex(loaded, result, {onProgress: (m) => this.note(m)})
      this.say(`registered in Vertex AI as ${vertex.model}`)
      return {...result, vertex}
    }
    return result
  }
}
