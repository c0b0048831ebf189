// The runs a project has trained: `ml runs list | show | compare | rm` read run directories (run.json,
// config.json, metrics.jsonl, evaluation.json) and never write into them, except rm, which deletes.
import type {MlConfig} from '../config/schema.js'
import {UserError} from '../errors.js'
import {lineChart, svgDocument, writeSvgPng, type LineSeries} from '../monitor/charts.js'
import {
  latestRunId,
  listRunIds,
  markLatest,
  readEpochMetrics,
  readRunConfig,
  readRunInfo,
  resolveRunDir,
  RUN_FILES,
  type EpochMetrics,
  type RunInfo,
} from '../model/run-dir.js'
import {baseName, exists, joinPath, readJson, remove} from '../storage/index.js'
import {textTable as textTableOf} from '../ui/table.js'

/** One line of `ml runs list`. */
export interface RunRow {
  id: string
  createdAt: string
  /** The preset, the pretrained base, or "layers(N)" for an explicit layer list. */
  model: string
  epochs: number
  plannedEpochs: number
  /** Validation accuracy of the epoch the model holds. */
  valAccuracy?: number
  /** Test accuracy recorded by `ml evaluate`. */
  testAccuracy?: number
  backend: string
  datasetVersion?: number
  status: string
  /** The epoch kept by train.earlyStopping.restoreBest, when it is not the last. */
  keptEpoch?: number
  latest: boolean
  /** Why the run could not be read (status "unreadable"). */
  error?: string
}

/** What a model config is, in a word. */
export function modelLabel(model: MlConfig['model'] | undefined): string {
  const m = (model ?? {}) as Record<string, unknown>
  if (typeof m.preset === 'string') return m.preset
  if (typeof m.base === 'string') return m.base
  if (m.base && typeof m.base === 'object' && typeof (m.base as Record<string, unknown>).name === 'string') return String((m.base as Record<string, unknown>).name)
  if (Array.isArray(m.layers)) return `layers(${m.layers.length})`
  return '-'
}

async function readTestAccuracy(runDir: string): Promise<number | undefined> {
  const file = joinPath(runDir, RUN_FILES.evaluation)
  if (!(await exists(file))) return undefined
  const report = await readJson<{accuracy?: number}>(file).catch(() => undefined)
  return typeof report?.accuracy === 'number' ? report.accuracy : undefined
}

async function runRow(runsDir: string, id: string, latest: string | undefined): Promise<RunRow> {
  const runDir = joinPath(runsDir, id)
  let info: RunInfo
  try {
    info = await readRunInfo(runDir)
  } catch (error) {
    // A damaged run is listed (so that it can be removed), never a reason for the list to fail.
    return {id, createdAt: '', model: '-', epochs: 0, plannedEpochs: 0, backend: '-', status: 'unreadable', latest: id === latest, error: (error as Error).message}
  }
  const config = await readRunConfig(runDir).catch(() => undefined)
  const kept = info.kept && info.kept.restored ? info.kept.epoch : undefined
  const testAccuracy = await readTestAccuracy(runDir)
  return {
    id,
    createdAt: info.createdAt,
    model: modelLabel(config?.model),
    epochs: info.epochsCompleted,
    plannedEpochs: info.epochs,
    ...(info.final?.valAccuracy === undefined ? {} : {valAccuracy: info.final.valAccuracy}),
    ...(testAccuracy === undefined ? {} : {testAccuracy}),
    backend: info.backend,
    datasetVersion: info.dataset?.version,
    status: info.status,
    ...(kept === undefined ? {} : {keptEpoch: kept}),
    latest: id === latest,
  }
}

/** Every run under `runsDir`, oldest first (run ids start with the model name, so sort by time). */
export async function listRuns(runsDir: string): Promise<RunRow[]> {
  const latest = await latestRunId(runsDir)
  const rows = await Promise.all((await listRunIds(runsDir)).map((id) => runRow(runsDir, id, latest)))
  return rows.sort((a, b) => (a.createdAt === b.createdAt ? (a.id < b.id ? -1 : 1) : a.createdAt < b.createdAt ? -1 : 1))
}

const fixed = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(4))

/** The table `ml runs list` prints; the latest run is marked with *. */
export function runsTable(rows: RunRow[]): string {
  const headers = ['id', 'date', 'model', 'epochs', 'val_acc', 'test_acc', 'backend', 'dataset', 'status']
  return textTableOf(
    headers,
    rows.map((r) => [
      r.latest ? `${r.id} *` : r.id,
      r.createdAt ? r.createdAt.replace('T', ' ').replace(/\.\d+Z$|Z$/, '') : '-',
      r.model,
      (r.plannedEpochs && r.epochs !== r.plannedEpochs ? `${r.epochs}/${r.plannedEpochs}` : String(r.epochs)) + (r.keptEpoch ? ` (kept ${r.keptEpoch})` : ''),
      fixed(r.valAccuracy),
      fixed(r.testAccuracy),
      r.backend,
      r.datasetVersion === undefined ? '-' : `v${r.datasetVersion}`,
      r.status,
    ]),
  )
}

/** Everything recorded about one run. */
export interface RunDetails {
  runDir: string
  info: RunInfo
  config?: MlConfig
  model: string
  metrics: EpochMetrics[]
  evaluation?: {accuracy?: number; loss?: number; count?: number}
}

export async function showRun(runsDir: string, ref?: string): Promise<RunDetails> {
  const runDir = await resolveRunDir(runsDir, ref)
  const info = await readRunInfo(runDir).catch((error: Error) => {
    throw new UserError(`run ${ref ?? runDir}: run.json cannot be read (${error.message})`, {code: 'RUN_UNREADABLE', exit: 'data', suggestions: ['Remove it with `ml runs rm`.']})
  })
  const config = await readRunConfig(runDir).catch(() => undefined)
  const metrics = await readEpochMetrics(runDir).catch(() => [])
  let evaluation: RunDetails['evaluation']
  if (await exists(joinPath(runDir, RUN_FILES.evaluation))) {
    const report = await readJson<{accuracy?: number; loss?: number; count?: number}>(joinPath(runDir, RUN_FILES.evaluation)).catch(() => undefined)
    if (report) evaluation = {accuracy: report.accuracy, loss: report.loss, count: report.count}
  }
  return {runDir, info, ...(config ? {config} : {}), model: modelLabel(config?.model), metrics, ...(evaluation ? {evaluation} : {})}
}

/** The human view of `ml runs show`. */
export function runText(d: RunDetails): string {
  const i = d.info
  const lines = [
    `run ${i.runId} (${i.status})`,
    `  dir       ${d.runDir}`,
    `  created   ${i.createdAt}   updated ${i.updatedAt}`,
    `  model     ${d.model}, ${i.params.toLocaleString('en-US')} parameters`,
    `  training  ${i.epochsCompleted}/${i.epochs} epochs on ${i.backend}${i.workers > 1 ? ` x${i.workers}` : ''}, seed ${i.seed}`,
    `  dataset   ${i.dataset.store} v${i.dataset.version} (${i.dataset.classes.length} classes)`,
  ]
  if (i.kept) lines.push(`  kept      epoch ${i.kept.epoch}${i.kept.restored ? ` (best ${i.kept.monitor}, restored)` : ''}`)
  if (i.final) lines.push(`  final     loss ${fixed(i.final.loss)} acc ${fixed(i.final.accuracy)} val_loss ${fixed(i.final.valLoss)} val_acc ${fixed(i.final.valAccuracy)}`)
  if (d.evaluation) lines.push(`  test      acc ${fixed(d.evaluation.accuracy)} loss ${fixed(d.evaluation.loss)}${d.evaluation.count ? ` on ${d.evaluation.count} images` : ''}`)
  if (i.error) lines.push(`  error     ${i.error}`)
  if (d.metrics.length) {
    lines.push('', textTableOf(['epoch', 'loss', 'acc', 'val_loss', 'val_acc', 'img/s', 'seconds'], d.metrics.map((m) => [String(m.epoch), fixed(m.loss), fixed(m.accuracy), fixed(m.valLoss), fixed(m.valAccuracy), m.imagesPerSec.toFixed(0), m.seconds.toFixed(1)])))
  }
  return lines.join('\n')
}

/** Config keys (dotted) with their values, arrays and scalars as leaves. */
export function flattenConfig(value: unknown, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flattenConfig(v, prefix ? `${prefix}.${k}` : k, out)
  } else if (prefix) out[prefix] = value
  return out
}

/** Keys whose values differ between configs, with each config's value (absent keys as undefined). */
export function configDifferences(configs: readonly unknown[]): Array<{key: string; values: unknown[]}> {
  const flat = configs.map((c) => flattenConfig(c))
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort()
  return keys
    .map((key) => ({key, values: flat.map((f) => f[key])}))
    .filter(({values}) => values.some((v) => JSON.stringify(v) !== JSON.stringify(values[0])))
}

export interface ComparedRun {
  id: string
  model: string
  status: string
  epochs: number
  keptEpoch?: number
  loss?: number
  accuracy?: number
  valLoss?: number
  valAccuracy?: number
  bestValAccuracy?: number
  testAccuracy?: number
  imagesPerSec?: number
  seconds: number
  params: number
}

export interface RunComparison {
  runs: ComparedRun[]
  differences: Array<{key: string; values: unknown[]}>
  /** The PNG of the curves. */
  png: string
}

// tab10: distinct colours for up to ten runs, then they repeat.
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf']

/** Loss and accuracy per epoch of several runs on shared axes: train solid, validation dashed, a colour per run. */
export function comparisonSvg(runs: ReadonlyArray<{id: string; metrics: readonly EpochMetrics[]}>, width = 1100, height = 460): string {
  const series = (key: 'loss' | 'accuracy', valKey: 'valLoss' | 'valAccuracy'): LineSeries[] =>
    runs.flatMap((r, i) => {
      const colour = PALETTE[i % PALETTE.length]!
      return [
        {name: `${r.id} train`, colour, points: r.metrics.map((m) => [m.epoch, m[key]] as [number, number])},
        {name: `${r.id} val`, colour, dashed: true, points: r.metrics.map((m) => [m.epoch, m[valKey] ?? Number.NaN] as [number, number])},
      ]
    })
  const half = width / 2
  return svgDocument(
    width,
    height,
    lineChart({title: 'Loss', xLabel: 'epoch', yLabel: 'cross-entropy loss', series: series('loss', 'valLoss'), width: half, height, integerX: true}) +
      lineChart({title: 'Accuracy', xLabel: 'epoch', yLabel: 'accuracy', series: series('accuracy', 'valAccuracy'), width: half, height, x: half, integerX: true}),
  )
}

/** Metrics side by side, the config keys that differ, and a PNG of the curves (default <runs>/compare.png). */
export async function compareRuns(runsDir: string, refs: readonly string[], options: {png?: string} = {}): Promise<RunComparison> {
  if (refs.length < 2) throw new UserError('`ml runs compare` needs at least two runs', {code: 'USAGE', exit: 'usage', suggestions: ['List runs with `ml runs list`, then e.g. `ml runs compare <run a> <run b>`.']})
  const details = await Promise.all(refs.map((ref) => showRun(runsDir, ref)))
  const runs: ComparedRun[] = details.map((d) => {
    const val = d.metrics.map((m) => m.valAccuracy).filter((v): v is number => v !== undefined)
    return {
      id: d.info.runId,
      model: d.model,
      status: d.info.status,
      epochs: d.info.epochsCompleted,
      ...(d.info.kept?.restored ? {keptEpoch: d.info.kept.epoch} : {}),
      loss: d.info.final?.loss,
      accuracy: d.info.final?.accuracy,
      valLoss: d.info.final?.valLoss,
      valAccuracy: d.info.final?.valAccuracy,
      ...(val.length ? {bestValAccuracy: Math.max(...val)} : {}),
      ...(d.evaluation?.accuracy === undefined ? {} : {testAccuracy: d.evaluation.accuracy}),
      imagesPerSec: d.info.final?.imagesPerSec,
      seconds: d.metrics.reduce((a, m) => a + m.seconds, 0),
      params: d.info.params,
    }
  })
  const png = options.png ?? joinPath(runsDir, 'compare.png')
  await writeSvgPng(comparisonSvg(details.map((d) => ({id: d.info.runId, metrics: d.metrics}))), png)
  return {runs, differences: configDifferences(details.map((d) => d.config ?? {})), png}
}

function cell(v: unknown): string {
  if (v === undefined) return '-'
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : Number(v.toPrecision(4)).toString()
  return typeof v === 'string' ? v : JSON.stringify(v)
}

/** The human view of `ml runs compare`: one column per run. */
export function comparisonText(c: RunComparison): string {
  const metric = (label: string, pick: (r: ComparedRun) => string) => [label, ...c.runs.map(pick)]
  const rows = [
    metric('model', (r) => r.model),
    metric('status', (r) => r.status),
    metric('epochs', (r) => String(r.epochs) + (r.keptEpoch ? ` (kept ${r.keptEpoch})` : '')),
    metric('params', (r) => r.params.toLocaleString('en-US')),
    metric('loss', (r) => fixed(r.loss)),
    metric('acc', (r) => fixed(r.accuracy)),
    metric('val_loss', (r) => fixed(r.valLoss)),
    metric('val_acc', (r) => fixed(r.valAccuracy)),
    metric('best val_acc', (r) => fixed(r.bestValAccuracy)),
    metric('test_acc', (r) => fixed(r.testAccuracy)),
    metric('img/s', (r) => (r.imagesPerSec === undefined ? '-' : r.imagesPerSec.toFixed(0))),
    metric('train seconds', (r) => r.seconds.toFixed(1)),
  ]
  const parts = [textTableOf(['', ...c.runs.map((r) => r.id)], rows)]
  parts.push('', c.differences.length ? textTableOf(['config', ...c.runs.map((r) => r.id)], c.differences.map((d) => [d.key, ...d.values.map(cell)])) : 'configs: identical')
  parts.push('', `curves: ${c.png}`)
  return parts.join('\n')
}

/**
 * Deletes runs. A running one is refused unless forced (its trainer would recreate files); LATEST
 * moves to the newest run left, or goes.
 */
export async function removeRuns(runsDir: string, refs: readonly string[], options: {force?: boolean} = {}): Promise<{removed: string[]; latest?: string}> {
  if (refs.length === 0) throw new UserError('`ml runs rm` needs at least one run id', {code: 'USAGE', exit: 'usage', suggestions: ['List runs with `ml runs list`.']})
  const dirs: string[] = []
  for (const ref of new Set(refs)) {
    const dir = await resolveRunDir(runsDir, ref)
    const info = await readRunInfo(dir).catch(() => undefined)
    if (info?.status === 'running' && !options.force) {
      throw new UserError(`run ${info.runId} is marked running`, {
        code: 'RUN_RUNNING',
        exit: 'usage',
        suggestions: ['Stop its `ml train` first; if that process is gone, pass --force.'],
      })
    }
    dirs.push(dir)
  }
  const removed: string[] = []
  for (const dir of dirs) {
    await remove(dir)
    removed.push(baseName(dir))
  }
  const latest = await latestRunId(runsDir)
  let newLatest = latest
  if (latest && removed.includes(latest)) {
    const left = await listRuns(runsDir)
    newLatest = left.filter((r) => r.status !== 'unreadable').at(-1)?.id
    if (newLatest) await markLatest(runsDir, newLatest)
    else await remove(joinPath(runsDir, 'LATEST'))
  }
  return {removed, ...(newLatest ? {latest: newLatest} : {})}
}
