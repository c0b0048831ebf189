// `npm run quickstart:photos`: synthetic 320x320 RGB photos -> ingest -> train on the pretrained
// MobileNetV2 base (frozen, cached features) -> evaluate -> export (tfjs + ONNX) -> predict, all
// through the `ml` CLI with a config written from `ml init --template photos`'s shape.
import {spawnSync} from 'node:child_process'
import {mkdir, readdir, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {stringify} from 'yaml'
import {ensureMobileNetBase} from './nsfwjs-base.js'
import {writePhotoFolders} from './synthetic-photos.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const work = path.join(root, '.ml', 'quickstart-photos')
const config = path.join(work, 'ml.yaml')
const PER_CLASS = Number(process.env.QUICKSTART_PER_CLASS ?? 60)
const TARGET = 0.9

function ml(args: string[], options: {json?: boolean} = {}): unknown {
  const shown = ['ml', ...args, '--config', path.relative(process.cwd(), config)].join(' ')
  process.stderr.write(`\n$ ${shown}\n`)
  const result = spawnSync(process.execPath, [path.join(root, 'bin', 'run.cjs'), ...args, '--config', config, ...(options.json ? ['--json'] : [])], {
    stdio: ['ignore', options.json ? 'pipe' : 'inherit', 'inherit'],
    encoding: 'utf8',
  })
  if (result.status !== 0) {
    if (result.stdout) process.stderr.write(result.stdout)
    process.stderr.write(`\nquickstart:photos: \`${shown}\` failed with exit code ${result.status}\n`)
    process.exit(result.status ?? 1)
  }
  return options.json ? JSON.parse(result.stdout) : undefined
}

const started = performance.now()
const base = await ensureMobileNetBase()
process.stderr.write(`quickstart:photos: pretrained base ${path.relative(process.cwd(), base)}; writing ${PER_CLASS} photos per class under ${path.relative(process.cwd(), work)}\n`)
await mkdir(work, {recursive: true})
const classes = await writePhotoFolders(path.join(work, 'photos'), {perClass: PER_CLASS, size: 320, classes: 4, seed: 1})
await writePhotoFolders(path.join(work, 'test-photos'), {perClass: 10, size: 320, classes: 4, seed: 2})
await writeFile(
  config,
  stringify({
    name: 'photos',
    data: {
      sources: [
        {type: 'folder', path: './photos'},
        {type: 'folder', path: './test-photos', split: 'test'},
      ],
      image: {width: 224, height: 224, channels: 3, fit: 'cover'},
      split: {validation: 0.1, test: 0, seed: 0},
      store: '.ml/dataset',
    },
    model: {base: {source: base, output: 'auto', trainable: false, inputRange: [0, 1]}, head: {hidden: [], dropout: 0.2}},
    train: {epochs: 10, batchSize: 32, learningRate: 0.003, backend: 'auto', seed: 42, runs: '.ml/runs'},
    export: {dir: '.ml/models', formats: ['tfjs', 'onnx']},
  }),
)

ml(['ingest'])
ml(['train'])
const evaluation = ml(['evaluate'], {json: true}) as {accuracy: number; count: number}
process.stderr.write(`test accuracy ${evaluation.accuracy.toFixed(4)} on ${evaluation.count} photos\n`)
ml(['export'])
const picks: string[] = []
for (const kind of classes.slice(0, 3)) picks.push(path.join(work, 'test-photos', kind, (await readdir(path.join(work, 'test-photos', kind))).sort()[0]!))
ml(['predict', ...picks, '--top-k', '2'])

const seconds = (performance.now() - started) / 1000
process.stderr.write(`\nquickstart:photos finished in ${seconds.toFixed(0)} s: test accuracy ${evaluation.accuracy.toFixed(4)} (target ${TARGET}); serve it with \`ml serve --config ${path.relative(process.cwd(), config)}\`\n`)
if (evaluation.accuracy < TARGET) process.exit(4)
