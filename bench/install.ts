// What a new user's first `npx` run costs: packs this checkout into the tarball npm would publish,
// then, in an empty folder with an empty npm cache (so every package comes from the registry, as on a
// first run), times `npx --package <tgz> ml --help` (install + first start) and `ml init`, and measures
// what was installed. Then, to show that the installed package works and not only starts, it ingests
// a few generated PNGs and trains one epoch with the installed `ml` (TensorFlow.js gradients
// included), checking the exit codes. ONNXRUNTIME_NODE_INSTALL and npm_config_* settings of this shell are dropped
// so that the install sees what a user's does. Prints one JSON object.
import {spawn} from 'node:child_process'
import {mkdir, mkdtemp, readdir, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {PNG} from 'pngjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const TARGET = {seconds: 60, megabytes: 450}

interface Ran {
  code: number | null
  seconds: number
  stdout: string
  stderr: string
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Ran> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {cwd, env, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({code, seconds: (performance.now() - started) / 1000, stdout, stderr}))
  })
}

async function bytesUnder(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, {withFileTypes: true})) {
    const p = path.join(dir, entry.name)
    if (entry.isDirectory()) total += await bytesUnder(p)
    else if (entry.isFile()) total += (await stat(p)).size
  }
  return total
}

/** Two classes of 12x12 RGB images (bright left half vs bright right half), deterministic. */
async function writeImages(dir: string, perClass: number): Promise<void> {
  for (const [label, left] of [['left', true], ['right', false]] as const) {
    await mkdir(path.join(dir, label), {recursive: true})
    for (let i = 0; i < perClass; i++) {
      const png = new PNG({width: 12, height: 12})
      for (let p = 0; p < 144; p++) {
        const bright = (p % 12 < 6) === left
        const v = bright ? 200 + ((p * 7 + i * 13) % 50) : 20 + ((p * 11 + i * 5) % 40)
        png.data.set([v, v, v, 255], p * 4)
      }
      await writeFile(path.join(dir, label, `${i}.png`), PNG.sync.write(png))
    }
  }
}

/** The environment of a user's shell: none of this machine's npm or onnxruntime settings. */
function userEnv(cache: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || /^ONNXRUNTIME_NODE_INSTALL/.test(k)) continue
    env[k] = v
  }
  return {...env, npm_config_cache: cache, npm_config_yes: 'true', npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false'}
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'ml-bench-install-'))
  try {
    const pack = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], ROOT, {...process.env})
    if (pack.code !== 0) throw new Error(`npm pack failed:\n${pack.stderr}`)
    const packed = (JSON.parse(pack.stdout) as Array<{filename: string; size: number; unpackedSize: number; entryCount: number}>)[0]!
    const tgz = path.join(work, packed.filename)
    const app = path.join(work, 'app')
    const cache = path.join(work, 'npm-cache')
    await mkdir(app)
    const env = userEnv(cache)

    const first = await run('npx', ['--package', tgz, 'ml', '--help'], app, env)
    const init = await run('npx', ['--package', tgz, 'ml', 'init'], app, env)
    // The installed package at work: ingest generated images, train one epoch (gradients, chained
    // tensor methods and the backend all exercised), from the same npx install.
    await writeImages(path.join(app, 'images'), 24)
    const ingest = await run('npx', ['--package', tgz, 'ml', 'ingest', '--json'], app, env)
    const train = await run('npx', ['--package', tgz, 'ml', 'train', '--json', '--quiet', '--epochs', '1'], app, env)
    const trained = train.code === 0 ? (JSON.parse(train.stdout) as Record<string, unknown>) : undefined
    const npxDir = path.join(cache, '_npx')
    const installedBytes = await bytesUnder(npxDir)
    const sizes: Record<string, number> = {}
    for (const hash of await readdir(npxDir)) {
      const modules = path.join(npxDir, hash, 'node_modules')
      for (const name of await readdir(modules).catch(() => [] as string[])) {
        const dirs = name.startsWith('@') ? (await readdir(path.join(modules, name))).map((n) => `${name}/${n}`) : [name]
        for (const d of dirs) sizes[d] = (sizes[d] ?? 0) + (await bytesUnder(path.join(modules, d)).catch(() => 0))
      }
    }
    const largest = Object.entries(sizes)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([name, bytes]) => ({name, megabytes: +(bytes / 1e6).toFixed(1)}))
    const installedMegabytes = +(installedBytes / 1e6).toFixed(1)
    const summary = {
      package: packed.filename,
      tarballKilobytes: +(packed.size / 1e3).toFixed(0),
      firstRun: {command: 'npx --package <tgz> ml --help', seconds: +first.seconds.toFixed(1), exitCode: first.code, printedHelp: /USAGE/.test(first.stdout)},
      init: {command: 'npx --package <tgz> ml init', seconds: +init.seconds.toFixed(1), exitCode: init.code},
      ingest: {command: 'ml ingest (48 generated PNGs)', seconds: +ingest.seconds.toFixed(1), exitCode: ingest.code},
      train: {command: 'ml train --epochs 1', seconds: +train.seconds.toFixed(1), exitCode: train.code, backend: trained?.backend, epochs: trained?.epochs, loss: trained?.loss},
      installedMegabytes,
      largest,
      onnxruntimeInstalled: 'onnxruntime-node' in sizes,
      target: TARGET,
      works: first.code === 0 && init.code === 0 && ingest.code === 0 && train.code === 0,
      withinTarget: first.code === 0 && init.code === 0 && first.seconds < TARGET.seconds && installedMegabytes < TARGET.megabytes,
      note: 'empty npm cache, every package from the registry: network speed counts; on a shared machine the seconds are noisy',
    }
    if (first.code !== 0) (summary as Record<string, unknown>).firstRunStderr = first.stderr.slice(-2000)
    if (init.code !== 0) (summary as Record<string, unknown>).initStderr = init.stderr.slice(-2000)
    console.log(JSON.stringify(summary, null, 2))
    if (ingest.code !== 0) (summary as Record<string, unknown>).ingestStderr = ingest.stderr.slice(-2000)
    if (train.code !== 0) (summary as Record<string, unknown>).trainStderr = train.stderr.slice(-2000)
    if (!summary.withinTarget || !summary.works) process.exitCode = 1
  } finally {
    await rm(work, {recursive: true, force: true})
  }
}

await main()
