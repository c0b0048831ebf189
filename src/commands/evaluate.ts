import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'
import {fmt} from '../lib/ui/progress.js'

export default class Evaluate extends MlCommand {
  static override summary = 'Score a trained model on the test split.'
  static override description = `Reports accuracy, loss, per-class precision/recall/F1 and the confusion matrix of a run (default: the latest) on a dataset split (default: test), run by ONNX Runtime when the model converts to ONNX and onnxruntime-node is installed (else TensorFlow.js; --engine). The test report is saved in the run directory and goes into the model card on export.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> evaluate', '<%= config.bin %> evaluate --run mnist-20261124-101500 --json', '<%= config.bin %> evaluate --split validation']

  static override flags = {
    run: Flags.string({summary: 'Run id or run directory (default: the latest run).', env: 'ML_RUN'}),
    split: Flags.string({summary: 'Split to score.', options: ['test', 'validation', 'train'], default: 'test'}),
    engine: Flags.string({summary: 'Inference engine: auto (ONNX Runtime when it can), onnx or tfjs.', options: ['auto', 'onnx', 'tfjs'], default: 'auto'}),
    report: Flags.string({summary: 'Also write an HTML report with PNG charts (curves, confusion matrix, per-class accuracy, mistakes) into this folder.'}),
  }

  async run() {
    const {flags} = await this.parse(Evaluate)
    const loaded = await this.loadConfig(flags.config)
    const {evaluateRun} = await import('../lib/train/evaluate-run.js')
    const evaluated = await evaluateRun({loaded, run: flags.run, split: flags.split as 'test' | 'validation' | 'train', engine: flags.engine as 'auto' | 'onnx' | 'tfjs'})
    for (const note of evaluated.engineNotes) this.note(`note: ${note}`)
    let result: typeof evaluated & {report?: string} = evaluated
    if (flags.report) {
      const {writeEvaluationReport} = await import('../lib/monitor/report.js')
      const report = await writeEvaluationReport({result: evaluated, outDir: flags.report})
      this.note(`report: ${report.html}`)
      result = {...evaluated, report: report.html}
    }
    this.say(`run ${result.runId} on ${result.split} (${result.count} images): accuracy ${fmt(result.accuracy)}, loss ${fmt(result.loss)}, macro F1 ${fmt(result.macroF1)}`)
    this.say(`${result.engine}: ${result.imagesPerSec} images/s (${result.inferenceImagesPerSec} images/s inference alone)`)
    this.say('')
    const width = Math.max(5, ...result.perClass.map((c) => c.label.length))
    this.say(`${'class'.padEnd(width)}  precision  recall  f1      support`)
    for (const c of result.perClass) this.say(`${c.label.padEnd(width)}  ${fmt(c.precision).padEnd(9)}  ${fmt(c.recall).padEnd(6)}  ${fmt(c.f1).padEnd(6)}  ${c.support}`)
    this.say('')
    this.say('confusion matrix (rows: true class, columns: predicted)')
    const cell = Math.max(4, ...result.confusionMatrix.flat().map((n) => String(n).length + 1))
    this.say(' '.repeat(width) + result.perClass.map((c) => c.label.slice(0, cell - 1).padStart(cell)).join(''))
    result.confusionMatrix.forEach((row, i) => this.say(result.perClass[i]!.label.padEnd(width) + row.map((n) => String(n).padStart(cell)).join('')))
    return result
  }
}
