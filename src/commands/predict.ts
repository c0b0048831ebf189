import {Args, Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'
import {UserError} from '../lib/errors.js'

export default class Predict extends MlCommand {
  static override summary = 'Classify image files (or folders of them) with a trained model.'
  static override description = `Classifies JPEG, PNG, WebP, GIF, TIFF or AVIF files of any size, preprocessed exactly as in training; a folder stands for the images under it (recursively, by extension). Uses --model, else --run, else the latest exported version of the config's model, else the latest run, and names the model it used. Runs on ONNX Runtime when the model has (or converts to) an ONNX graph and onnxruntime-node is installed, else TensorFlow.js (--engine). Images are decoded in the thread pool while the engine runs the previous batch. A file that cannot be read or decoded is reported by name; the others are still classified, and the exit code is 3.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> predict digit.png', '<%= config.bin %> predict photos/ --top-k 3 --json', '<%= config.bin %> predict x.png --model .ml/models/mnist/2', '<%= config.bin %> predict x.png --model mnist@production']

  static override strict = false

  static override args = {
    images: Args.string({description: 'Image files or folders.', required: true}),
  }

  static override flags = {
    'top-k': Flags.integer({char: 'k', summary: 'Labels to show per image.', default: 1, min: 1}),
    model: Flags.string({summary: 'Export version folder (or model folder: its latest version), or name@alias / name@version in export.dir.', env: 'ML_MODEL'}),
    run: Flags.string({summary: 'Use a run\'s model instead of an export.', env: 'ML_RUN'}),
    engine: Flags.string({summary: 'Inference engine: auto (ONNX Runtime when it can), onnx or tfjs.', options: ['auto', 'onnx', 'tfjs'], default: 'auto'}),
    'batch-size': Flags.integer({summary: 'Images per inference batch.', default: 64, min: 1, max: 4096}),
  }

  async run() {
    const {flags, argv} = await this.parse(Predict)
    const loaded = await this.loadConfig(flags.config)
    const {initEngine} = await import('../lib/engine/backend.js')
    const {Predictor} = await import('../lib/serve/predictor.js')
    const {resolveModel} = await import('../lib/model/repository.js')
    const {collectInputs} = await import('../lib/predict/files.js')
    const {predictFiles} = await import('../lib/predict/run.js')
    const inputs = await collectInputs(argv as string[])
    if (inputs.files.length === 0) {
      throw new UserError(`no images in ${inputs.emptyFolders.join(', ')}`, {
        code: 'PREDICT_NO_IMAGES',
        exit: 'usage',
        suggestions: ['Name image files or folders holding .png, .jpg, .jpeg, .webp, .gif, .tif, .tiff or .avif files.'],
      })
    }
    const engine = await initEngine(loaded.config.train.backend)
    const resolved = await resolveModel(loaded, {model: flags.model, run: flags.run})
    const predictor = await Predictor.load(resolved.dir, {runtime: flags.engine as 'auto' | 'onnx' | 'tfjs', worker: {engine: loaded.config.train.backend}})
    const model = {dir: resolved.dir, source: resolved.source, name: resolved.description, engine: predictor.engine.label}
    this.note(`model: ${resolved.description} (${resolved.dir}) on ${predictor.engine.label}`)
    for (const note of predictor.engine.notes) this.note(`note: ${note}`)
    for (const folder of inputs.emptyFolders) this.note(`note: no images in ${folder}`)
    let result
    try {
      result = await predictFiles({
        predictor,
        files: inputs.files,
        topK: flags['top-k'],
        batchSize: flags['batch-size'],
        limits: {maxPixels: loaded.config.data.maxPixels, maxFileBytes: loaded.config.data.maxFileBytes},
        onResult: (r) => ('top' in r ? this.say(`${r.file}: ${r.top.map((t) => `${t.label} (${t.score.toFixed(3)})`).join(', ')}`) : this.logToStderr(r.error)),
      })
    } finally {
      predictor.dispose()
    }
    const {predictions, failed, stats} = result
    const speed = {images: stats.images, seconds: Math.round(stats.seconds * 1000) / 1000, imagesPerSec: Math.round(stats.imagesPerSec)}
    if (inputs.files.length > 1) this.note(`${stats.images} image(s) in ${speed.seconds} s (${speed.imagesPerSec} images/s) with ${resolved.description}`)
    if (failed.length > 0) {
      throw new UserError(`${failed.length} of ${inputs.files.length} image(s) could not be classified`, {
        code: 'PREDICT_FAILED',
        exit: 'data',
        details: {model, ...speed, predictions, failed},
      })
    }
    return {model, backend: engine.backend, ...speed, predictions}
  }
}
