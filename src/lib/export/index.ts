// `ml export`: writes a trained run into the model repository <dir>/<name>/<version>/ in one or more
// formats (tfjs, onnx, triton), optionally quantized, measured on the test split, with a model card.
import {randomBytes} from 'node:crypto'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {MlConfig} from '../config/schema.js'
import {loadSplit, readManifest} from '../data/store.js'
import type {DecodedSplit} from '../data/types.js'
import {initEngine} from '../engine/backend.js'
import {batchInferenceThreads, onnxAvailability} from '../engine/inference.js'
import {loadOnnxModel, loadTfjsModel, probeDifference} from '../model/runtimes/index.js'
import {exists, joinPath, readBytes, readJson, remove, swapDir, writeFileAtomic} from '../storage/index.js'
import {predictSplit, type Predictions} from '../train/evaluate.js'
import {loadModel} from '../model/artifact.js'
import {readEpochMetrics, readRunInfo, resolveRunDir, RUN_FILES, type RunInfo} from '../model/run-dir.js'
import {UserError} from '../errors.js'
import {buildCard, cardFile, cardMarkdown, toolkitVersion, type CardEvaluation, type CardFormat} from './card.js'
import {convertToOnnx, ONNX_INPUT, ONNX_OPSET, ONNX_OUTPUT} from './onnx.js'
import {createOnnxSession, maxAbsDiff, predictSplitOnnx} from './onnx-runtime.js'
import {QUANTIZE_MODES, type QuantizeMode} from './quantize.js'
import {listVersions, MODEL_FILES} from '../model/repository.js'
import {quantizeTfjs, tfjsArtifacts, type TfjsArtifacts} from './tfjs.js'
import {TRITON_FILES, tritonConfig, tritonLabels} from './triton.js'

export const EXPORT_FORMATS = ['tfjs', 'onnx', 'triton'] as const
export type ExportFormat = (typeof EXPORT_FORMATS)[number]

/**
 * An unquantized ONNX graph further than this from the tfjs model on the test split is a converter
 * bug, not rounding: the export is refused rather than served silently.
 */
export const ONNX_TOLERANCE = 1e-4

export interface ExportOptions {
  loaded: LoadedConfig
  /** Run id or directory; default: the latest run. */
  run?: string
  /** Repository directory (default export.dir). */
  dir?: string
  /** Version number (default: one above the highest existing, unless that one already holds the same files). */
  version?: number
  /** Formats (default export.formats). */
  formats?: ExportFormat[]
  /** Weight quantization (default export.quantize). */
  quantize?: QuantizeMode
  /** Progress lines for the terminal. */
  onProgress?: (message: string) => void
  /** The tfjs -> ONNX converter (default convertToOnnx); tests give one whose graph differs. */
  converter?: typeof convertToOnnx
}

export interface FormatResult {
  format: ExportFormat
  /** Files of this format, relative to the version folder. */
  files: string[]
  bytes: number
  /** What the same format weighs without quantization. */
  unquantizedBytes: number
  quantization: QuantizeMode
  /** Test-split accuracy of the exported artifact (tfjs via TensorFlow.js, onnx/triton via onnxruntime). */
  accuracy: number | null
  /** accuracy minus the unquantized tfjs model's accuracy. */
  accuracyDelta: number | null
  /** Largest difference of a test-split probability from the unquantized tfjs model's. */
  maxAbsDiff: number | null
}

export interface ExportResult {
  name: string
  version: number
  dir: string
  runId: string
  formats: FormatResult[]
  /** True when the latest existing version already held identical files (nothing was written). */
  unchanged: boolean
  quantization: QuantizeMode
  evaluation: CardEvaluation & {backend: string | null}
  notes: string[]
}

/** Parses `--format tfjs,onnx`: known names, duplicates dropped, order kept. */
export function parseFormats(text: string): ExportFormat[] {
  const names = text.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)
  const bad = names.filter((n) => !(EXPORT_FORMATS as readonly string[]).includes(n))
  if (bad.length || names.length === 0) {
    throw new UserError(`--format: unknown format ${bad.map((b) => `"${b}"`).join(', ') || '(none given)'}`, {
      code: 'USAGE',
      exit: 'usage',
      suggestions: [`Use a comma-separated list of ${EXPORT_FORMATS.join(', ')}, e.g. --format tfjs,onnx.`],
    })
  }
  return [...new Set(names)] as ExportFormat[]
}

export function parseQuantize(text: string): QuantizeMode {
  if (!(QUANTIZE_MODES as readonly string[]).includes(text)) {
    throw new UserError(`--quantize: unknown mode "${text}"`, {code: 'USAGE', exit: 'usage', suggestions: [`Use one of ${QUANTIZE_MODES.join(', ')}.`]})
  }
  return text as QuantizeMode
}

function bytesOf(data: Uint8Array | string): number {
  return typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength
}

function equalBytes(a: Uint8Array, b: Uint8Array | string): boolean {
  return Buffer.compare(Buffer.from(a), typeof b === 'string' ? Buffer.from(b) : Buffer.from(b)) === 0
}

interface TestData {
  split?: DecodedSplit
  evaluation: CardEvaluation
  notes: string[]
}

/** The dataset's test split, or why accuracy cannot be measured. */
async function readTestSplit(info: RunInfo, labels: string[]): Promise<TestData> {
  const store = info.dataset.store
  const none = (note: string, manifest?: {version: number; fingerprint: string}): TestData => ({
    evaluation: {split: 'test', count: 0, datasetVersion: manifest?.version ?? null, datasetFingerprint: manifest?.fingerprint ?? null, accuracy: null, loss: null, note},
    notes: [note],
  })
  let manifest
  try {
    manifest = await readManifest(store)
  } catch (error) {
    if (error instanceof UserError) return none(`the dataset ${store} cannot be read (${error.message}): accuracy not measured`)
    throw error
  }
  if (manifest.classes.length !== labels.length || manifest.classes.some((c, i) => c !== labels[i])) {
    return none(`the classes of ${store} changed since run ${info.runId} was trained: accuracy not measured`, manifest)
  }
  const split = await loadSplit(store, 'test', manifest)
  if (split.count === 0) return none(`the test split of ${store} is empty: accuracy not measured`, manifest)
  return {
    split,
    evaluation: {split: 'test', count: split.count, datasetVersion: manifest.version, datasetFingerprint: manifest.fingerprint, accuracy: null, loss: null},
    notes: [],
  }
}

/** What the exporters share: the run, its model in memory, and what was measured. */
interface ExportContext {
  name: string
  info: RunInfo
  labels: string[]
  preprocessing: Preprocessing
  mode: QuantizeMode
  config: MlConfig
  /** The run's tfjs model, unquantized and as exported. */
  original: TfjsArtifacts
  tfjs: TfjsArtifacts
  /** The ONNX graph (absent when ONNX cannot express the model). */
  onnx?: {bytes: Uint8Array; unquantizedBytes: number}
  tritonFiles: Record<string, string>
  notes: string[]
}

type Measured = {accuracy: number; maxAbsDiff: number}

interface Exporter {
  /** Files of the format in the version folder ('../x' for files beside the version folders). */
  files(ctx: ExportContext): Record<string, Uint8Array | string>
  unquantizedBytes(ctx: ExportContext): number
  /** Accuracy of the written files on the test split, against the unquantized tfjs model's scores. */
  measure(ctx: ExportContext, check: AccuracyCheck): Promise<Measured | undefined>
  details(ctx: ExportContext): Record<string, unknown>
}

/** The test split, the reference scores of the unquantized tfjs model, and the staging folder. */
interface AccuracyCheck {
  split: DecodedSplit
  base: Predictions
  staging: string
  /** Measurements shared between formats holding the same file (onnx and triton). */
  cache: Map<string, Promise<Measured>>
}

type Preprocessing = Record<string, unknown> & {height: number; width: number; channels: number; scale: number; offset: number}

const tfjsExporter: Exporter = {
  files: (ctx) => ({[MODEL_FILES.modelJson]: ctx.tfjs.json, [MODEL_FILES.weights]: ctx.tfjs.weights}),
  unquantizedBytes: (ctx) => bytesOf(ctx.original.json) + ctx.original.weights.byteLength,
  async measure(ctx, check) {
    if (ctx.mode === 'none') return {accuracy: check.base.accuracy, maxAbsDiff: 0}
    // loadModel is what predict and serve use: it must decode the quantized weights.
    const model = await loadModel(check.staging)
    const p = await predictSplit(model, check.split, ctx.labels.length)
    model.dispose()
    return {accuracy: p.accuracy, maxAbsDiff: maxAbsDiff(p.probabilities, check.base.probabilities)}
  },
  details: () => ({modelFormat: 'layers-model'}),
}

/** ONNX Runtime's scores of model.onnx; an unquantized graph further than ONNX_TOLERANCE from tfjs is refused. */
function measureOnnx(ctx: ExportContext, check: AccuracyCheck): Promise<Measured> {
  let measured = check.cache.get(MODEL_FILES.onnx)
  if (measured === undefined) {
    measured = (async () => {
      const session = await createOnnxSession(ctx.onnx!.bytes)
      let p
      try {
        p = await predictSplitOnnx(session, check.split, ctx.labels.length, ctx.preprocessing)
      } finally {
        await session.release()
      }
      const result = {accuracy: p.accuracy, maxAbsDiff: maxAbsDiff(p.probabilities, check.base.probabilities)}
      if (ctx.mode === 'none' && !(result.maxAbsDiff <= ONNX_TOLERANCE)) {
        throw new UserError(
          `the ONNX graph of run ${ctx.info.runId} differs from the tfjs model by ${result.maxAbsDiff.toExponential(2)} on the ${check.split.count} test images (tolerance ${ONNX_TOLERANCE}): refusing to export it`,
          {
            code: 'EXPORT_ONNX_MISMATCH',
            exit: 'data',
            details: {maxAbsDiff: result.maxAbsDiff, tolerance: ONNX_TOLERANCE, onnxAccuracy: result.accuracy, tfjsAccuracy: check.base.accuracy},
            suggestions: ['Export with --format tfjs (TensorFlow.js serves it), and report the model config: this is a converter bug.'],
          },
        )
      }
      return result
    })()
    check.cache.set(MODEL_FILES.onnx, measured)
  }
  return measured
}

const onnxDetails = {opset: ONNX_OPSET, input: ONNX_INPUT, output: ONNX_OUTPUT}

const onnxExporter: Exporter = {
  files: (ctx) => ({[MODEL_FILES.onnx]: ctx.onnx!.bytes}),
  unquantizedBytes: (ctx) => ctx.onnx!.unquantizedBytes,
  measure: measureOnnx,
  details: () => onnxDetails,
}

const tritonExporter: Exporter = {
  files: (ctx) => ({[MODEL_FILES.onnx]: ctx.onnx!.bytes, ...Object.fromEntries(Object.entries(ctx.tritonFiles).map(([f, d]) => [`../${f}`, d]))}),
  unquantizedBytes: (ctx) => ctx.onnx!.unquantizedBytes + Object.values(ctx.tritonFiles).reduce((n, d) => n + bytesOf(d), 0),
  measure: measureOnnx,
  details: () => ({...onnxDetails, platform: 'onnxruntime_onnx'}),
}

export const EXPORTERS: Record<ExportFormat, Exporter> = {tfjs: tfjsExporter, onnx: onnxExporter, triton: tritonExporter}

/** The ONNX_TOLERANCE check on synthetic images, for a dataset without a test split. */
async function checkOnnxWithoutSplit(ctx: ExportContext, modelDir: string): Promise<void> {
  const shape: [number, number, number] = [ctx.preprocessing.height, ctx.preprocessing.width, ctx.preprocessing.channels]
  const tfjs = await loadTfjsModel(modelDir, shape)
  const onnx = await loadOnnxModel(ctx.onnx!.bytes, shape, {threads: batchInferenceThreads()})
  try {
    const diff = await probeDifference(tfjs, onnx, shape)
    if (!(diff <= ONNX_TOLERANCE)) {
      throw new UserError(`the ONNX graph of run ${ctx.info.runId} differs from the tfjs model by ${diff.toExponential(2)} on synthetic images (tolerance ${ONNX_TOLERANCE}): refusing to export it`, {
        code: 'EXPORT_ONNX_MISMATCH',
        exit: 'data',
        details: {maxAbsDiff: diff, tolerance: ONNX_TOLERANCE},
        suggestions: ['Export with --format tfjs (TensorFlow.js serves it), and report the model config: this is a converter bug.'],
      })
    }
  } finally {
    tfjs.dispose()
    onnx.dispose()
  }
}

/**
 * The ONNX graph of the (quantized) model. When ONNX cannot express a layer and tfjs is exported too,
 * the ONNX formats are dropped with one note naming the layer; asked for alone, that is an error.
 */
function convertOnnx(ctx: ExportContext, formats: ExportFormat[], progress: (m: string) => void, converter: typeof convertToOnnx): ExportFormat[] {
  if (!formats.includes('onnx') && !formats.includes('triton')) return formats
  const onnxOf = (artifacts: TfjsArtifacts, quantization: QuantizeMode) =>
    converter({
      modelJson: artifacts.modelJson,
      weights: artifacts.weights,
      name: ctx.name,
      producerVersion: toolkitVersion(),
      docString: `${ctx.name}: image classifier exported by ml from run ${ctx.info.runId}`,
      metadata: {
        labels: JSON.stringify(ctx.labels),
        preprocessing: JSON.stringify(ctx.preprocessing),
        model_name: ctx.name,
        run_id: ctx.info.runId,
        input_layout: 'NHWC',
        quantization,
      },
    })
  progress('converting to ONNX')
  try {
    const bytes = onnxOf(ctx.tfjs, ctx.mode)
    ctx.onnx = {bytes, unquantizedBytes: ctx.mode === 'none' ? bytes.byteLength : onnxOf(ctx.original, 'none').byteLength}
    return formats
  } catch (error) {
    if (!(error instanceof UserError) || error.code !== 'EXPORT_UNSUPPORTED_LAYER' || !formats.includes('tfjs')) throw error
    const dropped = formats.filter((f) => f !== 'tfjs')
    ctx.notes.push(`${error.message}: wrote tfjs only (not ${dropped.join(', ')}); serve, predict and evaluate run this model with TensorFlow.js`)
    return ['tfjs']
  }
}

export async function runExport(options: ExportOptions): Promise<ExportResult> {
  const {loaded} = options
  const {config} = loaded
  const progress = options.onProgress ?? (() => {})
  const mode = options.quantize ?? config.export.quantize
  const runDir = await resolveRunDir(resolvePath(loaded, config.train.runs), options.run)
  const info = await readRunInfo(runDir)
  const modelDir = joinPath(runDir, RUN_FILES.model)
  if (info.status !== 'completed' || !(await exists(joinPath(modelDir, MODEL_FILES.modelJson)))) {
    throw new UserError(`run ${info.runId} has not finished training (status ${info.status})`, {
      code: 'RUN_INCOMPLETE',
      exit: 'data',
      suggestions: [`Finish it with \`ml train --resume ${info.runId}\`, or export another run with --run.`],
    })
  }
  const repoDir = options.dir ?? resolvePath(loaded, config.export.dir)
  const name = config.name
  const labels = await readJson<string[]>(joinPath(runDir, RUN_FILES.labels))
  const preprocessing = await readJson<Preprocessing>(joinPath(runDir, RUN_FILES.preprocessing))
  const evaluationFile = joinPath(runDir, RUN_FILES.evaluation)
  const runEvaluation = (await exists(evaluationFile)) ? await readJson<{loss?: number; accuracy?: number}>(evaluationFile) : undefined

  // Model files in memory: the run's tfjs model, its quantized form, and the ONNX graph of that.
  const original = tfjsArtifacts(await readBytes(joinPath(modelDir, MODEL_FILES.modelJson)), await readBytes(joinPath(modelDir, MODEL_FILES.weights)), 'none')
  const ctx: ExportContext = {name, info, labels, preprocessing, mode, config, original, tfjs: quantizeTfjs(original, mode), tritonFiles: {}, notes: []}
  const formats = convertOnnx(ctx, options.formats ?? [...new Set(config.export.formats)], progress, options.converter ?? convertToOnnx)
  if (formats.includes('triton')) {
    const t = config.export.triton
    ctx.tritonFiles[TRITON_FILES.config] = tritonConfig({
      name,
      input: {name: ONNX_INPUT, dims: [preprocessing.height, preprocessing.width, preprocessing.channels]},
      output: {name: ONNX_OUTPUT, dims: [labels.length]},
      settings: {maxBatchSize: t.maxBatchSize, preferredBatchSize: t.preferredBatchSize, maxQueueDelayMicroseconds: t.maxQueueDelayMicroseconds, instances: t.instances, kind: t.kind},
    })
    ctx.tritonFiles[TRITON_FILES.labels] = tritonLabels(labels)
  }
  // The version folder's files: every format's, except those beside the version folders ('../').
  const files: Record<string, Uint8Array | string> = {}
  for (const format of formats) for (const [file, data] of Object.entries(EXPORTERS[format].files(ctx))) if (!file.startsWith('../')) files[file] = data

  const modelRoot = joinPath(repoDir, name)
  const staging = joinPath(modelRoot, `.staging-${process.pid}-${randomBytes(4).toString('hex')}`)
  try {
    // Model files go to the staging folder first, so that accuracy is measured on the bytes written.
    for (const [file, data] of Object.entries(files)) await writeFileAtomic(joinPath(staging, file), data)

    const test = await readTestSplit(info, labels)
    const notes = [...ctx.notes, ...test.notes]
    const measured: Partial<Record<ExportFormat, Measured>> = {}
    let backend: string | null = null
    if (test.split) {
      const split = test.split
      const engine = await initEngine(config.train.backend)
      backend = engine.backend
      progress(`measuring accuracy on ${split.count} test images`)
      const reference = await loadModel(modelDir)
      const base = await predictSplit(reference, split, labels.length)
      reference.dispose()
      test.evaluation.accuracy = base.accuracy
      test.evaluation.loss = base.loss
      const check: AccuracyCheck = {split, base, staging, cache: new Map()}
      const ort = ctx.onnx ? await onnxAvailability() : undefined
      for (const format of formats) {
        if (format !== 'tfjs' && ort?.available === false) continue
        measured[format] = await EXPORTERS[format].measure(ctx, check)
      }
      if (ort?.available === false) notes.push(`${ort.notes[0] ?? 'onnxruntime-node is not available'}; model.onnx was written but not checked against the tfjs model`)
    } else if (ctx.onnx && ctx.mode === 'none' && (await onnxAvailability()).available) {
      // No test split to measure on: the graph is still checked, on a fixed batch of synthetic images.
      await checkOnnxWithoutSplit(ctx, modelDir)
    }

    const formatResults: FormatResult[] = []
    const cardFormats: CardFormat[] = []
    for (const format of formats) {
      const exporter = EXPORTERS[format]
      const own = exporter.files(ctx)
      const m = measured[format]
      const baseline = test.evaluation.accuracy
      const accuracy = m?.accuracy ?? null
      // Accuracies are k/n: rounding drops the float noise of the subtraction (0.00049999999999994).
      const accuracyDelta = accuracy === null || baseline === null ? null : Math.round((accuracy - baseline) * 1e9) / 1e9
      const bytes = Object.values(own).reduce<number>((n, d) => n + bytesOf(d), 0)
      formatResults.push({format, files: Object.keys(own), bytes, unquantizedBytes: exporter.unquantizedBytes(ctx), quantization: mode, accuracy, accuracyDelta, maxAbsDiff: m?.maxAbsDiff ?? null})
      cardFormats.push({format, files: Object.entries(own).map(([f, d]) => cardFile(f, d)), bytes, quantization: mode, accuracy, accuracyDelta, details: exporter.details(ctx)})
    }

    const card = buildCard({
      name,
      info,
      labels,
      preprocessing,
      runConfig: await readJson(joinPath(runDir, RUN_FILES.config)),
      metrics: await readEpochMetrics(runDir),
      evaluation: runEvaluation,
      quantization: {mode, weights: ctx.tfjs.quantized},
      evaluated: test.evaluation,
      formats: cardFormats,
    })
    files[MODEL_FILES.labels] = JSON.stringify(labels) + '\n'
    files[MODEL_FILES.preprocessing] = JSON.stringify(preprocessing, null, 2) + '\n'
    files[MODEL_FILES.card] = JSON.stringify(card, null, 2) + '\n'
    files[MODEL_FILES.cardMarkdown] = cardMarkdown(card)

    const versions = await listVersions(repoDir, name)
    const latest = versions.at(-1)
    const finish = (version: number, unchanged: boolean): ExportResult => ({
      name,
      version,
      dir: joinPath(modelRoot, String(version)),
      runId: info.runId,
      formats: formatResults,
      unchanged,
      quantization: mode,
      evaluation: {...test.evaluation, backend},
      notes,
    })
    // Re-exporting the same run gives the same bytes; do not pile up identical versions.
    if (options.version === undefined && latest !== undefined && (await sameFiles(joinPath(modelRoot, String(latest)), files))) {
      const rewritten = await writeModelFiles(modelRoot, ctx.tritonFiles)
      await warnTriton(notes, formats, modelRoot, latest)
      return finish(latest, !rewritten)
    }
    const version = options.version ?? (latest ?? 0) + 1
    for (const file of [MODEL_FILES.labels, MODEL_FILES.preprocessing, MODEL_FILES.card, MODEL_FILES.cardMarkdown]) await writeFileAtomic(joinPath(staging, file), files[file]!)
    await swapDir(staging, joinPath(modelRoot, String(version)))
    // Written after the version folder exists, so Triton never sees a config without its model.
    await writeModelFiles(modelRoot, ctx.tritonFiles)
    await warnTriton(notes, formats, modelRoot, version)
    return finish(version, false)
  } finally {
    await remove(staging)
  }
}

/** True when `dir` holds every one of `files` with the same bytes. */
async function sameFiles(dir: string, files: Record<string, Uint8Array | string>): Promise<boolean> {
  for (const [file, data] of Object.entries(files)) {
    const p = joinPath(dir, file)
    if (!(await exists(p)) || !equalBytes(await readBytes(p), data)) return false
  }
  return true
}

/** Writes model-level files that differ from what is there; returns whether any was written. */
async function writeModelFiles(modelRoot: string, files: Record<string, string>): Promise<boolean> {
  let wrote = false
  for (const [file, data] of Object.entries(files)) {
    const p = joinPath(modelRoot, file)
    if ((await exists(p)) && equalBytes(await readBytes(p), data)) continue
    await writeFileAtomic(p, data)
    wrote = true
  }
  return wrote
}

/** Triton serves the latest version: say so when that version has no model.onnx for it. */
async function warnTriton(notes: string[], formats: ExportFormat[], modelRoot: string, version: number): Promise<void> {
  if (formats.includes('triton')) return
  if (!(await exists(joinPath(modelRoot, TRITON_FILES.config)))) return
  if (await exists(joinPath(modelRoot, String(version), MODEL_FILES.onnx))) return
  notes.push(`${joinPath(modelRoot, TRITON_FILES.config)} exists but version ${version} has no ${MODEL_FILES.onnx}: Triton will fail to load it; export with --format triton`)
}

export type {QuantizeMode} from './quantize.js'
export type ExportConfig = MlConfig['export']
