import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'
import {UserError} from '../lib/errors.js'

export default class Evaluate extends MlCommand {
  static override summary = 'Score a model on labelled images: a run\'s test split, another dataset store, or a folder of class sub-folders.'
  static override description = `Reports accuracy, loss, per-class precision/recall/F1, the confusion matrix and images/s. The model: --model (an exported version folder, a model folder meaning its latest version, name@alias, name@version, or a model.onnx file with labels.json and preprocessing.json beside it), else --run, else the latest run. The images: --data, a dataset store (a folder with manifest.json, gs:// or s3://; --split, default test) or a folder with one sub-folder of images per class (the layout \`ml ingest\` reads); default the run's own dataset (else data.store). Classes are matched to the model's labels by name, so a dataset whose class order differs from the model's scores right; a class the model does not know is an error. Undecodable files of a folder are left out and named.

Runs on ONNX Runtime when the model converts to ONNX and onnxruntime-node is installed (else TensorFlow.js; --engine). A run's test report on its own dataset is saved in the run directory and goes into the model card on export.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> evaluate',
    '<%= config.bin %> evaluate --run mnist-20261124-101500 --json',
    '<%= config.bin %> evaluate --split validation',
    '<%= config.bin %> evaluate --model mnist@production --data photos/labelled/',
    '<%= config.bin %> evaluate --model .ml/models/mnist/3/model.onnx --data gs://bucket/other-store --split test',
  ]

  static override flags = {
    run: Flags.string({summary: 'Run id or run directory (default: the latest run).', env: 'ML_RUN', exclusive: ['model']}),
    model: Flags.string({summary: 'Export version folder, model folder (its latest version), name@alias, name@version, or a model.onnx file.', env: 'ML_MODEL'}),
    data: Flags.string({summary: 'Labelled images: a dataset store (path, gs://, s3://) or a folder of class sub-folders (default: the run\'s dataset).'}),
    split: Flags.string({summary: 'Split of a dataset store to score (default: test).', options: ['test', 'validation', 'train']}),
    engine: Flags.string({summary: 'Inference engine: auto (ONNX Runtime when it can), onnx or tfjs.', options: ['auto', 'onnx', 'tfjs'], default: 'auto'}),
    'batch-size': Flags.integer({summary: 'Images per inference batch.', default: 256, min: 1, max: 4096}),
    report: Flags.string({summary: 'Also write an HTML report with PNG charts (curves, confusion matrix, per-class accuracy, mistakes) into this folder (a run on its own dataset).'}),
  }

  async run() {
    const {flags} = await this.parse(Evaluate)
    if (flags.report && (flags.model || flags.data)) {
      throw new UserError('--report describes a run on its own dataset', {code: 'EVALUATE_REPORT', exit: 'usage', suggestions: ['Drop --report, or --model and --data.']})
    }
    const loaded = await this.loadConfig(flags.config)
    const {evaluate} = await import('../lib/train/evaluate-run.js')
    const {createProgress} = await import('../lib/ui/progress.js')
    const {renderEvaluation} = await import('../lib/ui/evaluation.js')
    const progress = createProgress({label: 'evaluate', unit: 'images', enabled: !this.jsonEnabled()})
    let evaluated
    try {
      evaluated = await evaluate({
        loaded,
        run: flags.run,
        model: flags.model,
        data: flags.data,
        split: flags.split as 'test' | 'validation' | 'train' | undefined,
        engine: flags.engine as 'auto' | 'onnx' | 'tfjs',
        batchSize: flags['batch-size'],
        onProgress: (done, total) => progress.update(done, undefined, total),
      })
    } finally {
      progress.stop()
    }
    for (const note of evaluated.engineNotes) this.note(`note: ${note}`)
    for (const s of evaluated.skipped) this.note(`skipped: ${s.error}`)
    let result: typeof evaluated & {report?: string} = evaluated
    if (flags.report && evaluated.runId !== undefined) {
      const {writeEvaluationReport} = await import('../lib/monitor/report.js')
      const report = await writeEvaluationReport({result: {...evaluated, runId: evaluated.runId, runDir: evaluated.runDir!}, outDir: flags.report})
      this.note(`report: ${report.html}`)
      result = {...evaluated, report: report.html}
    }
    this.say(renderEvaluation(result))
    return result
  }
}
