// `npm run quickstart`: real MNIST digits -> ingest -> train -> evaluate -> export -> predict, all
// through the `ml` CLI and configs/quickstart.yaml, the way a new user would run them.
import {spawnSync} from 'node:child_process'
import {mkdir} from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {materialiseMnist} from '../src/lib/data/mnist.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const config = path.join(root, 'configs', 'quickstart.yaml')
const work = path.join(root, '.ml', 'quickstart')
const TRAIN = Number(process.env.QUICKSTART_TRAIN ?? 12_000)
const TEST = Number(process.env.QUICKSTART_TEST ?? 2000)
const TARGET = 0.97

function ml(args: string[], options: {json?: boolean} = {}): unknown {
  const shown = ['ml', ...args, '--config', path.relative(process.cwd(), config)].join(' ')
  process.stderr.write(`\n$ ${shown}\n`)
  const result = spawnSync(process.execPath, [path.join(root, 'bin', 'run.cjs'), ...args, '--config', config, ...(options.json ? ['--json'] : [])], {
    stdio: ['ignore', options.json ? 'pipe' : 'inherit', 'inherit'],
    encoding: 'utf8',
  })
  if (result.status !== 0) {
    if (result.stdout) process.stderr.write(result.stdout)
    process.stderr.write(`\nquickstart: \`${shown}\` failed with exit code ${result.status}\n`)
    process.exit(result.status ?? 1)
  }
  return options.json ? JSON.parse(result.stdout) : undefined
}

const started = performance.now()
process.stderr.write(`quickstart: writing ${TRAIN} training and ${TEST} test MNIST digits as PNG class folders under ${path.relative(process.cwd(), work)}/data\n`)
await mkdir(work, {recursive: true})
await materialiseMnist(path.join(work, 'data', 'train'), 'train', 0, TRAIN)
await materialiseMnist(path.join(work, 'data', 'test'), 'test', 0, TEST)

ml(['ingest'])
ml(['train'])
const evaluation = ml(['evaluate'], {json: true}) as {accuracy: number; loss: number; count: number}
process.stderr.write(`test accuracy ${evaluation.accuracy.toFixed(4)} on ${evaluation.count} images (loss ${evaluation.loss.toFixed(4)})\n`)
ml(['export'])
const {readdir} = await import('node:fs/promises')
const picks: string[] = []
for (const digit of ['3', '7', '9']) {
  const dir = path.join(work, 'data', 'test', digit)
  const first = (await readdir(dir)).sort()[0]
  if (first) picks.push(path.join(dir, first))
}
ml(['predict', ...picks, '--top-k', '2'])

const seconds = (performance.now() - started) / 1000
process.stderr.write(`\nquickstart finished in ${seconds.toFixed(0)} s: test accuracy ${evaluation.accuracy.toFixed(4)} (target ${TARGET})\n`)
if (evaluation.accuracy < TARGET) {
  process.stderr.write(`quickstart: test accuracy ${evaluation.accuracy.toFixed(4)} is below ${TARGET}\n`)
  process.exit(4)
}
