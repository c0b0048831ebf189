import {Args, Flags} from '@oclif/core'
import {readFile} from 'node:fs/promises'
import {MlCommand} from '../lib/ui/command.js'
import {UserError} from '../lib/errors.js'

export default class Predict extends MlCommand {
  static override summary = 'Classify image files with a trained model.'
  static override description = `Classifies JPEG, PNG, WebP, GIF, TIFF or AVIF files of any size, preprocessed exactly as in training. Uses --model, else --run, else the latest exported version of the config's model, else the latest run. A file that cannot be read or decoded is reported by name; the others are still classified, and the exit code is 3.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> predict digit.png', '<%= config.bin %> predict photos/*.jpg --top-k 3 --json', '<%= config.bin %> predict x.png --model .ml/models/mnist/2', '<%= config.bin %> predict x.png --model mnist@production']

  static override strict = false

  static override args = {
    images: Args.string({description: 'Image files.', required: true}),
  }

  static override flags = {
    'top-k': Flags.integer({char: 'k', summary: 'Labels to show per image.', default: 1, min: 1}),
    model: Flags.string({summary: 'Export version folder (or model folder: its latest version), or name@alias / name@version in export.dir.', env: 'ML_MODEL'}),
    run: Flags.string({summary: 'Use a run\'s model instead of an export.', env: 'ML_RUN'}),
  }

  async run() {
    const {flags, argv} = await this.parse(Predict)
    const files = argv as string[]
    const loaded = await this.loadConfig(flags.config)
    const {initEngine} = await import('../lib/engine/backend.js')
    const {Predictor} = await import('../lib/serve/predictor.js')
    const {resolveModelDir} = await import('../lib/model/repository.js')
    const engine = await initEngine(loaded.config.train.backend)
    const predictor = await Predictor.load(await resolveModelDir(loaded, {model: flags.model, run: flags.run}))
    const predictions: Array<{file: string; top: Array<{label: string; index: number; score: number}>}> = []
    const failed: Array<{file: string; error: string}> = []
    try {
      for (const file of files) {
        try {
          const bytes = await readFile(file).catch((error: NodeJS.ErrnoException) => {
            throw new UserError(`${file}: ${error.code === 'ENOENT' ? 'no such file' : error.message}`, {code: 'IMAGE_UNREADABLE', exit: 'data'})
          })
          const input = await predictor.preprocess(bytes, file)
          const probabilities = await predictor.predictBatch(input, 1)
          const top = predictor.topK(probabilities, 0, flags['top-k'])
          predictions.push({file, top})
          this.say(`${file}: ${top.map((t) => `${t.label} (${t.score.toFixed(3)})`).join(', ')}`)
        } catch (error) {
          if (!(error instanceof UserError)) throw error
          failed.push({file, error: error.message})
          this.logToStderr(`${error.message}`)
        }
      }
    } finally {
      predictor.dispose()
    }
    if (failed.length > 0) {
      throw new UserError(`${failed.length} of ${files.length} image(s) could not be classified`, {
        code: 'PREDICT_FAILED',
        exit: 'data',
        details: {predictions, failed},
      })
    }
    return {model: predictor.dir, backend: engine.backend, predictions}
  }
}
