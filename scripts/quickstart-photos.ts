// `npm run quickstart:photos`: synthetic 320x320 RGB photos -> ingest -> train on the pretrained
// MobileNetV2 base (frozen, cached features) -> evaluate -> export (tfjs + ONNX) -> predict -> serve
// (an ephemeral port on 127.0.0.1, one KServe V2 request with a real photo, compared with
// `ml predict`, then SIGTERM), all through the `ml` CLI with a config shaped like
// `ml init --template photos`'s.
import {spawn, spawnSync} from 'node:child_process'
import {mkdir, readdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {createInterface} from 'node:readline'
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

/** `ml serve` on an ephemeral port: one KServe V2 inference with a real photo, the same scores as `ml predict`. */
async function serveCheck(photo: string, labels: string[]): Promise<number> {
  const predicted = ml(['predict', photo, '--top-k', String(labels.length)], {json: true}) as {predictions: Array<{top: Array<{label: string; score: number}>}>}
  const expected = new Map(predicted.predictions[0]!.top.map((t) => [t.label, t.score]))
  process.stderr.write(`\n$ ml serve --port 0 --config ${path.relative(process.cwd(), config)}\n`)
  const server = spawn(process.execPath, [path.join(root, 'bin', 'run.cjs'), 'serve', '--port', '0', '--config', config], {stdio: ['ignore', 'ignore', 'pipe']})
  const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)))
  try {
    // The server announces its address as a JSON event line on stderr.
    const url = await new Promise<string>((resolve, reject) => {
      server.on('exit', (code) => reject(new Error(`ml serve exited (${code}) before listening`)))
      createInterface({input: server.stderr!}).on('line', (line) => {
        process.stderr.write(`${line}\n`)
        try {
          const event = JSON.parse(line) as {event?: string; url?: string}
          if (event.event === 'listening' && event.url) resolve(event.url)
        } catch {
          // Not an event line.
        }
      })
    })
    const body = {inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [(await readFile(photo)).toString('base64')]}]}
    const response = await fetch(`${url}/v2/models/photos/infer`, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)})
    if (!response.ok) throw new Error(`KServe V2 infer answered ${response.status}: ${await response.text()}`)
    const answer = (await response.json()) as {model_version?: string; outputs: Array<{name: string; data: number[]}>}
    const scores = answer.outputs.find((o) => o.name === 'probabilities')!.data
    const diff = Math.max(...labels.map((label, i) => Math.abs(scores[i]! - expected.get(label)!)))
    const best = labels[scores.indexOf(Math.max(...scores))]
    process.stderr.write(`KServe V2 ${url}/v2/models/photos/infer: ${best} (${Math.max(...scores).toFixed(3)}), largest difference from ml predict ${diff.toExponential(2)}\n`)
    if (!(diff <= 1e-4)) throw new Error(`ml serve and ml predict disagree on ${photo} by ${diff}`)
    return diff
  } finally {
    if (server.exitCode === null) server.kill('SIGTERM')
    const code = await exited
    if (code !== 0) process.stderr.write(`ml serve exited with code ${code} after SIGTERM\n`)
  }
}

try {
  await serveCheck(picks[0]!, JSON.parse(await readFile(path.join(work, '.ml', 'dataset', 'manifest.json'), 'utf8')).classes as string[])
} catch (error) {
  process.stderr.write(`\nquickstart:photos: serving failed: ${(error as Error).message}\n`)
  process.exit(1)
}

const seconds = (performance.now() - started) / 1000
process.stderr.write(`\nquickstart:photos finished in ${seconds.toFixed(0)} s: test accuracy ${evaluation.accuracy.toFixed(4)} (target ${TARGET}), served over KServe V2 with ml predict's scores; serve it yourself with \`ml serve --config ${path.relative(process.cwd(), config)}\`\n`)
if (evaluation.accuracy < TARGET) process.exit(4)
