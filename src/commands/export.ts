import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'

export default class Export extends MlCommand {
  static override summary = 'Write a trained model into the model repository.'
  static override description = `Exports a run (default: the latest) to <export.dir>/<name>/<version>/ as a TensorFlow.js layers model (model.json + weights.bin) with labels.json, preprocessing.json and a model card (model-card.json, MODEL_CARD.md). Versions are numbered 1, 2, ...; re-exporting an unchanged run does not create a new version.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> export', '<%= config.bin %> export --run mnist-20261124-101500 --dir ./models --json']

  static override flags = {
    run: Flags.string({summary: 'Run id or run directory (default: the latest run).', env: 'ML_RUN'}),
    format: Flags.string({summary: 'Formats, comma-separated.', options: ['tfjs'], default: 'tfjs'}),
    dir: Flags.string({summary: 'Model repository directory (overrides export.dir).', env: 'ML_EXPORT_DIR'}),
    version: Flags.integer({summary: 'Version number to write (default: next).', min: 1}),
  }

  async run() {
    const {flags} = await this.parse(Export)
    const loaded = await this.loadConfig(flags.config, {'export.dir': flags.dir})
    const {exportTfjs} = await import('../lib/export/tfjs.js')
    const result = await exportTfjs({loaded, run: flags.run, version: flags.version})
    this.say(
      result.unchanged
        ? `${result.name} version ${result.version} already holds run ${result.runId}: nothing to write (${result.dir})`
        : `exported run ${result.runId} as ${result.name} version ${result.version} to ${result.dir}`,
    )
    return result
  }
}
