import {Args, Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'
import {UserError} from '../lib/errors.js'

export default class Predict extends MlCommand {
  static override summary = 'Classify image files, folders, globs, lists or CSV files of paths with a trained model.'
  static override description = `Classifies JPEG, PNG, WebP, GIF, TIFF or AVIF files of any size, preprocessed exactly as in training. Inputs: files; folders (the images under them, recursively, by extension); glob patterns, quoted or expanded by the shell ('photos/**/*.jpg'); text files of paths, one a line (@paths.txt or --list paths.txt); CSV files with a column of paths (--csv images.csv --path-column path). Relative paths in a list or CSV are resolved against its folder.

Uses --model, else --run, else the latest exported version of the config's model, else the latest run, and names the model it used. Runs on ONNX Runtime when the model has (or converts to) an ONNX graph and onnxruntime-node is installed, else TensorFlow.js (--engine). Images are decoded in the thread pool a few batches ahead while the engine runs in its worker thread.

Rows stream out in input order as each batch is done: JSON Lines or CSV with --output (format from the extension, or --format) or --format jsonl|csv to stdout; a progress bar goes to stderr. A file that is missing, unreadable or not a decodable image is a row with an error; the others are still classified and every row is written, and the exit code is then 3.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> predict digit.png',
    '<%= config.bin %> predict photos/ --top-k 3 --json',
    `<%= config.bin %> predict 'photos/**/*.jpg' --output predictions.csv`,
    '<%= config.bin %> predict @paths.txt --format jsonl > predictions.jsonl',
    '<%= config.bin %> predict --csv images.csv --path-column path --output out.jsonl',
    '<%= config.bin %> predict x.png --model .ml/models/mnist/2',
    '<%= config.bin %> predict x.png --model mnist@production',
  ]

  static override strict = false

  static override args = {
    images: Args.string({description: 'Image files, folders, glob patterns or @list files.', required: false}),
  }

  static override flags = {
    'top-k': Flags.integer({char: 'k', summary: 'Labels to show per image.', default: 1, min: 1}),
    model: Flags.string({summary: 'Export version folder (or model folder: its latest version), an ONNX file\'s folder, or name@alias / name@version in export.dir.', env: 'ML_MODEL'}),
    run: Flags.string({summary: 'Use a run\'s model instead of an export.', env: 'ML_RUN'}),
    engine: Flags.string({summary: 'Inference engine: auto (ONNX Runtime when it can), onnx or tfjs.', options: ['auto', 'onnx', 'tfjs'], default: 'auto'}),
    'batch-size': Flags.integer({summary: 'Images per inference batch.', default: 64, min: 1, max: 4096}),
    list: Flags.string({summary: 'Text file of image paths, one a line (same as @file).', multiple: true}),
    csv: Flags.string({summary: 'CSV file (header row) with a column of image paths.', multiple: true}),
    'path-column': Flags.string({summary: 'The --csv column holding the paths.', default: 'path'}),
    output: Flags.string({char: 'o', summary: 'Write one row per image to this file (.jsonl or .csv; see --format), streamed as batches finish.'}),
    format: Flags.string({summary: 'Row format: jsonl or csv (default: from --output\'s extension; to stdout when no --output), or text (lines for people).', options: ['text', 'jsonl', 'csv']}),
  }

  async run() {
    const {flags, argv} = await this.parse(Predict)
    const {collectInputs} = await import('../lib/predict/files.js')
    const {formatOfFile, openRowWriter, rowWriter} = await import('../lib/predict/output.js')
    const args = argv as string[]
    if (args.length === 0 && !flags.list?.length && !flags.csv?.length) {
      throw new UserError('name the images to classify', {
        code: 'PREDICT_NO_INPUT',
        exit: 'usage',
        suggestions: ['Pass image files, folders or glob patterns, @paths.txt, --list paths.txt or --csv images.csv.'],
      })
    }
    const format = (flags.format ?? (flags.output ? formatOfFile(flags.output) : undefined) ?? (flags.output ? 'jsonl' : 'text')) as 'text' | 'jsonl' | 'csv'
    if (flags.output && format === 'text') throw new UserError('--output writes jsonl or csv rows, not text', {code: 'PREDICT_FORMAT', exit: 'usage', suggestions: ['Use --format jsonl or --format csv with --output.']})
    if (this.jsonEnabled() && !flags.output && format !== 'text') {
      throw new UserError(`--json prints one JSON object on stdout, so ${format} rows need --output`, {code: 'PREDICT_FORMAT', exit: 'usage', suggestions: [`Add --output predictions.${format}, or drop --json.`]})
    }
    const loaded = await this.loadConfig(flags.config)
    const inputs = await collectInputs(args, {lists: flags.list, csv: flags.csv ? {files: flags.csv, column: flags['path-column']} : undefined})
    for (const pattern of inputs.emptyPatterns) this.note(`note: no images match ${pattern}`)
    for (const folder of inputs.emptyFolders) this.note(`note: no images in ${folder}`)
    if (inputs.files.length === 0) {
      throw new UserError(`no images in ${[...inputs.emptyFolders, ...inputs.emptyPatterns].join(', ') || 'the lists given'}`, {
        code: 'PREDICT_NO_IMAGES',
        exit: 'usage',
        suggestions: ['Name image files, folders or patterns matching .png, .jpg, .jpeg, .webp, .gif, .tif, .tiff or .avif files.'],
      })
    }
    const {initEngine} = await import('../lib/engine/backend.js')
    const {Predictor} = await import('../lib/serve/predictor.js')
    const {resolveModel} = await import('../lib/model/repository.js')
    const {predictFiles} = await import('../lib/predict/run.js')
    const {createProgress} = await import('../lib/ui/progress.js')
    const engine = await initEngine(loaded.config.train.backend)
    const resolved = await resolveModel(loaded, {model: flags.model, run: flags.run})
    const predictor = await Predictor.load(resolved.dir, {runtime: flags.engine as 'auto' | 'onnx' | 'tfjs', worker: {engine: loaded.config.train.backend}})
    const model = {dir: resolved.dir, source: resolved.source, name: resolved.description, engine: predictor.engine.label}
    // The output file is replaced only once the model has loaded: a failure before leaves it as it was.
    let writer
    try {
      writer = flags.output ? await openRowWriter(flags.output, format as 'jsonl' | 'csv', flags['top-k']) : format === 'text' ? undefined : rowWriter(process.stdout, format, flags['top-k'], false)
    } catch (error) {
      predictor.dispose()
      throw error
    }
    this.note(`model: ${resolved.description} (${resolved.dir}) on ${predictor.engine.label}`)
    for (const note of predictor.engine.notes) this.note(`note: ${note}`)
    // The bar when rows go to a file or a pipe; lines on a terminal are their own progress.
    const barShown = !this.jsonEnabled() && (writer !== undefined || !process.stdout.isTTY) && inputs.files.length > 1
    const progress = createProgress({label: 'predict', total: inputs.files.length, unit: 'images', enabled: barShown})
    let done = 0
    let result
    try {
      result = await predictFiles({
        predictor,
        files: inputs.files,
        topK: flags['top-k'],
        batchSize: flags['batch-size'],
        limits: {maxPixels: loaded.config.data.maxPixels, maxFileBytes: loaded.config.data.maxFileBytes},
        collect: writer === undefined,
        onBatch: () => writer?.flush(),
        onResult: async (r) => {
          progress.update(++done)
          if (writer) await writer.write(r)
          else if ('top' in r) this.say(`${r.file}: ${r.top.map((t) => `${t.label} (${t.score.toFixed(3)})`).join(', ')}`)
          // Failures on stderr too (above the bar), whatever else carries them.
          if ('error' in r && barShown) progress.log(r.error)
          else if ('error' in r) this.note(r.error)
        },
      })
    } finally {
      progress.stop()
      predictor.dispose()
      await writer?.close()
    }
    const {predictions, failed, stats} = result
    const speed = {images: stats.images, failedCount: stats.failed, seconds: Math.round(stats.seconds * 1000) / 1000, imagesPerSec: Math.round(stats.imagesPerSec)}
    const output = flags.output ? {output: flags.output, format, rows: writer!.rows} : writer ? {format, rows: writer.rows} : {}
    if (inputs.files.length > 1) this.note(`${stats.images} image(s) in ${speed.seconds} s (${speed.imagesPerSec} images/s) with ${resolved.description}${flags.output ? `, ${writer!.rows} row(s) in ${flags.output}` : ''}`)
    if (stats.failed > 0) {
      throw new UserError(`${stats.failed} of ${inputs.files.length} image(s) could not be classified${writer ? ' (their rows carry the error)' : ''}`, {
        code: 'PREDICT_FAILED',
        exit: 'data',
        details: {model, ...speed, ...output, ...(writer ? {failed: failed.slice(0, 20)} : {predictions, failed})},
      })
    }
    return {model, backend: engine.backend, ...speed, ...output, ...(writer ? {} : {predictions})}
  }
}
