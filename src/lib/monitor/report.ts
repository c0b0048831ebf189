// `ml evaluate --report <dir>`: an HTML page with PNG charts beside it (training curves, confusion
// matrix, per-class accuracy, the most confident mistakes decoded from the dataset shards).
import {mkdir, writeFile} from 'node:fs/promises'
import path from 'node:path'
import sharp from 'sharp'
import type {DecodedSplit} from '../data/types.js'
import {loadSplit, readManifest} from '../data/store.js'
import {predictSplit} from '../train/evaluate.js'
import {loadModel} from '../model/artifact.js'
import {readEpochMetrics, readRunInfo, RUN_FILES, type EpochMetrics} from '../model/run-dir.js'
import type {EvaluateResult} from '../train/evaluate-run.js'
import {joinPath} from '../storage/index.js'
import {barChartSvg, confusionMatrixSvg, escapeXml, imageGridSvg, trainingCurvesSvg, writeSvgPng, type GridImage} from './charts.js'

export const REPORT_FILES = {
  html: 'index.html',
  curves: 'training-curves.png',
  confusion: 'confusion-matrix.png',
  perClass: 'per-class-accuracy.png',
  mistakes: 'misclassified.png',
} as const

export interface ReportResult {
  dir: string
  html: string
  images: Array<{file: string; width: number; height: number}>
  misclassified: number
}

export interface ReportOptions {
  result: EvaluateResult
  outDir: string
  /** Most misclassified images shown (the most confident mistakes first). */
  maxMistakes?: number
}

export interface Mistake {
  index: number
  trueLabel: number
  predicted: number
  confidence: number
}

/** The wrong predictions, most confident first (those say the most about what the model learnt). */
export function findMistakes(labels: Int32Array, predicted: Int32Array, probabilities: Float32Array, numClasses: number): Mistake[] {
  const out: Mistake[] = []
  for (let i = 0; i < labels.length; i++) {
    if (predicted[i] === labels[i]) continue
    out.push({index: i, trueLabel: labels[i]!, predicted: predicted[i]!, confidence: probabilities[i * numClasses + predicted[i]!]!})
  }
  return out.sort((a, b) => b.confidence - a.confidence || a.index - b.index)
}

/** One decoded image of a split as a PNG tile, scaled up with hard pixel edges. */
async function tile(split: DecodedSplit, index: number, size: number): Promise<Buffer> {
  const frame = split.width * split.height * split.channels
  const pixels = Buffer.from(split.pixels.buffer, split.pixels.byteOffset + index * frame, frame)
  return sharp(pixels, {raw: {width: split.width, height: split.height, channels: split.channels as 1 | 3}})
    .resize(size, size, {kernel: 'nearest', fit: 'contain', background: '#000000'})
    .png()
    .toBuffer()
}

const pct = (v: number) => `${(v * 100).toFixed(2)}%`

function html(result: EvaluateResult, metrics: EpochMetrics[], images: ReportResult['images'], mistakes: number, datasetVersion: number | null): string {
  const rows = result.perClass
    .map((c) => `<tr><td>${escapeXml(c.label)}</td><td>${c.precision.toFixed(4)}</td><td>${c.recall.toFixed(4)}</td><td>${c.f1.toFixed(4)}</td><td>${c.support}</td></tr>`)
    .join('\n')
  const img = (file: string, alt: string) => {
    const i = images.find((x) => x.file === file)
    return i ? `<figure><img src="${file}" width="${i.width}" height="${i.height}" alt="${escapeXml(alt)}"><figcaption>${escapeXml(alt)}</figcaption></figure>` : ''
  }
  const last = metrics.at(-1)
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Evaluation of ${escapeXml(result.runId)}</title>
<style>
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#666;font-size:90%}.summary td{text-align:left}
</style>
</head>
<body>
<h1>Evaluation of run <code>${escapeXml(result.runId)}</code></h1>
<table class="summary">
<tr><th>split</th><td>${escapeXml(result.split)} (${result.count} images${datasetVersion === null ? '' : `, dataset version ${datasetVersion}`})</td></tr>
<tr><th>accuracy</th><td>${pct(result.accuracy)}</td></tr>
<tr><th>loss</th><td>${result.loss.toFixed(4)}</td></tr>
<tr><th>macro F1</th><td>${result.macroF1.toFixed(4)}</td></tr>
<tr><th>misclassified</th><td>${mistakes}</td></tr>
<tr><th>epochs</th><td>${metrics.length}${last ? ` (last: train accuracy ${pct(last.accuracy)}${last.valAccuracy === undefined ? '' : `, validation ${pct(last.valAccuracy)}`})` : ''}</td></tr>
<tr><th>backend</th><td>${escapeXml(result.backend)}</td></tr>
</table>
<h2>Training curves</h2>
${img(REPORT_FILES.curves, 'Loss and accuracy per epoch, training and validation')}
<h2>Confusion matrix</h2>
${img(REPORT_FILES.confusion, 'Rows: true class, columns: predicted class; colour: share of the row, numbers: counts')}
<h2>Per-class accuracy</h2>
${img(REPORT_FILES.perClass, 'Recall of each class (share of its images classified right); dashed: overall accuracy')}
<table>
<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
${rows}
</table>
<h2>Misclassified images</h2>
${img(REPORT_FILES.mistakes, 'The most confident mistakes: true class, predicted class and its probability')}
<p style="color:#666;font-size:85%">Written by <code>ml evaluate --report</code>. The PNG files beside this page are all it references.</p>
</body>
</html>
`
}

/**
 * Writes the report for an evaluation already computed by evaluateRun. The split is decoded and
 * predicted again here for the misclassified grid (the engine is already initialised by then).
 */
export async function writeEvaluationReport(options: ReportOptions): Promise<ReportResult> {
  const {result} = options
  const dir = path.resolve(options.outDir)
  await mkdir(dir, {recursive: true})
  const info = await readRunInfo(result.runDir)
  const metrics = await readEpochMetrics(result.runDir)
  const labels = result.perClass.map((c) => c.label)
  const images: ReportResult['images'] = []
  const save = async (file: string, svg: string) => {
    const written = await writeSvgPng(svg, path.join(dir, file))
    images.push({file, width: written.width, height: written.height})
  }
  await save(REPORT_FILES.curves, trainingCurvesSvg(metrics, `Training of ${result.runId}`))
  await save(REPORT_FILES.confusion, confusionMatrixSvg(result.confusionMatrix, labels, `Confusion matrix (${result.split}, ${result.count} images)`).svg)
  await save(
    REPORT_FILES.perClass,
    barChartSvg({
      title: `Per-class accuracy (${result.split})`,
      labels,
      values: result.perClass.map((c) => c.recall),
      xLabel: 'class',
      yLabel: 'accuracy (recall)',
      reference: {value: result.accuracy, label: `overall ${pct(result.accuracy)}`},
    }).svg,
  )

  const manifest = await readManifest(info.dataset.store)
  const split = await loadSplit(info.dataset.store, result.split as DecodedSplit['split'], manifest)
  const model = await loadModel(joinPath(result.runDir, RUN_FILES.model))
  const predictions = await predictSplit(model, split, labels.length)
  model.dispose()
  const mistakes = findMistakes(split.labels, predictions.predicted, predictions.probabilities, labels.length)
  const shown = mistakes.slice(0, options.maxMistakes ?? 40)
  const size = 84
  const grid: GridImage[] = await Promise.all(
    shown.map(async (m) => ({
      png: await tile(split, m.index, size),
      caption: `${labels[m.trueLabel]} → ${labels[m.predicted]}`,
      detail: `p = ${m.confidence.toFixed(2)}`,
    })),
  )
  await save(
    REPORT_FILES.mistakes,
    imageGridSvg({
      title: `Misclassified ${result.split} images (${shown.length} of ${mistakes.length})`,
      note: 'caption: true class → predicted class, p = predicted probability; most confident first',
      images: grid,
      columns: 8,
      tile: size,
    }).svg,
  )
  const file = path.join(dir, REPORT_FILES.html)
  await writeFile(file, html(result, metrics, images, mistakes.length, manifest.version))
  return {dir, html: file, images, misclassified: mistakes.length}
}
