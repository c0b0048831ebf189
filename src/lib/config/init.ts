// `ml init`: writes a starter config (and, for the mnist template, sample digits next to it).
import {access, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {UserError} from '../errors.js'
import {parseConfigText, validateConfig} from './load.js'
import {TEMPLATES, type TemplateName} from './templates.js'

export interface InitOptions {
  /** The config file to write. */
  file: string
  template: TemplateName
  force?: boolean
  /** mnist only: write sample digits to <config folder>/data/mnist. */
  withData?: {train: number; test: number}
  /** Progress lines. */
  say?: (line: string) => void
}

export interface InitResult {
  config: string
  template: TemplateName
  dataWritten?: {train: number; test: number; dir: string}
}

export async function writeStarter(options: InitOptions): Promise<InitResult> {
  const file = path.resolve(options.file)
  const say = options.say ?? (() => {})
  if (options.withData && options.template !== 'mnist') throw new UserError('--with-data works with --template mnist', {code: 'USAGE', exit: 'usage'})
  const exists = await access(file).then(
    () => true,
    () => false,
  )
  if (exists && !options.force) {
    throw new UserError(`${options.file} already exists`, {code: 'CONFIG_EXISTS', exit: 'usage', suggestions: ['Pass --force to overwrite it.']})
  }
  const text = TEMPLATES[options.template]
  validateConfig(parseConfigText(text, options.template), `template ${options.template}`)
  await writeFile(file, text)
  say(`wrote ${options.file} (template ${options.template})`)
  let dataWritten: InitResult['dataWritten']
  if (options.withData) {
    const {materialiseMnist} = await import('../data/mnist.js')
    const dir = path.join(path.dirname(file), 'data', 'mnist')
    const train = await materialiseMnist(path.join(dir, 'train'), 'train', 0, options.withData.train)
    const test = await materialiseMnist(path.join(dir, 'test'), 'test', 0, options.withData.test)
    dataWritten = {train, test, dir}
    say(`wrote ${train} training and ${test} test digits under ${path.relative(process.cwd(), dir) || dir}`)
  }
  say('next: `ml config validate`, then `ml ingest`')
  return {config: file, template: options.template, ...(dataWritten ? {dataWritten} : {})}
}
