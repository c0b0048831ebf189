// `ml evaluate`'s text: the headline, per-class precision/recall/F1 and the confusion matrix, as
// tables through ui/table.ts.
import type {Evaluation} from '../train/evaluate-run.js'
import {fmt} from './progress.js'
import {textTable} from './table.js'

export function renderEvaluation(result: Evaluation): string {
  const data = result.data.kind === 'store' ? `${result.data.location} (${result.data.split})` : `folder ${result.data.location}`
  const lines = [
    `${result.model.name} on ${data}, ${result.count} images: accuracy ${fmt(result.accuracy)}, loss ${fmt(result.loss)}, macro F1 ${fmt(result.macroF1)}`,
    `${result.engine}: ${result.imagesPerSec} images/s (${result.inferenceImagesPerSec} images/s inference alone)`,
  ]
  if (result.skipped.length) lines.push(`${result.skipped.length} file(s) could not be decoded and were left out`)
  lines.push('', textTable(['class', 'precision', 'recall', 'f1', 'support'], result.perClass.map((c) => [c.label, fmt(c.precision), fmt(c.recall), fmt(c.f1), c.support]), {align: [undefined, 'right', 'right', 'right', 'right']}))
  lines.push('', 'confusion matrix (rows: true class, columns: predicted)')
  const labels = result.perClass.map((c) => c.label)
  lines.push(textTable(['', ...labels], result.confusionMatrix.map((row, i) => [labels[i]!, ...row]), {align: [undefined, ...labels.map(() => 'right' as const)]}))
  return lines.join('\n')
}
