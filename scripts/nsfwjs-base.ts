// Turns the Keras MobileNetV2 that the npm package nsfwjs (MIT) ships inside its tarball as base64
// JavaScript modules into a standard TensorFlow.js layers model (model.json + weights.bin), the
// pretrained base the photo quickstart, tests and bench:transfer use. `npm run base:mobilenet`.
// Product code never loads the npm package: it reads the converted folder like any other base.
import {createHash} from 'node:crypto'
import {mkdir, readFile, rename, rm, writeFile} from 'node:fs/promises'
import {createRequire} from 'node:module'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
/** Where the converted base lives: outside git (ignored), rebuilt from node_modules on demand. */
export const MOBILENET_DIR = path.join(ROOT, '.cache', 'bases', 'mobilenet-v2')
/** The layer whose output is the 1280 pooled features (average pooling, then flatten). */
export const MOBILENET_FEATURES = 'flatten_1'

interface ModelJsonLike {
  modelTopology: unknown
  weightsManifest: Array<{paths: string[]; weights: unknown[]}>
  format?: string
  generatedBy?: string
  convertedBy?: string | null
}

/**
 * Converts nsfwjs's MobileNetV2 into `dir` (default MOBILENET_DIR) unless it is already there, and
 * returns the folder. The folder is written beside and renamed into place, so a killed run never
 * leaves a half-written base.
 */
export async function ensureMobileNetBase(dir = MOBILENET_DIR): Promise<string> {
  try {
    await readFile(path.join(dir, 'model.json'))
    return dir
  } catch {
    // not converted yet
  }
  const require = createRequire(import.meta.url)
  // The package's exports map hides its files from require.resolve: the folder is found directly.
  const modelsDir = path.join(ROOT, 'node_modules', 'nsfwjs', 'dist', 'models', 'mobilenet_v2')
  try {
    await readFile(path.join(modelsDir, 'model.min.js'))
  } catch {
    throw new Error(`nsfwjs is not installed (no ${modelsDir}): run \`npm install\` (it is a dev dependency)`)
  }
  // Each file is a UMD bundle: CommonJS require() evaluates it and returns its export.
  const json = require(path.join(modelsDir, 'model.min.js')) as ModelJsonLike
  const manifest = json.weightsManifest
  const buffers: Buffer[] = []
  for (const group of manifest) {
    for (const file of group.paths) {
      const base64 = require(path.join(modelsDir, `${file}.min.js`)) as string
      if (typeof base64 !== 'string') throw new Error(`${file}.min.js does not export a base64 string`)
      buffers.push(Buffer.from(base64, 'base64'))
    }
  }
  const weights = Buffer.concat(buffers)
  const modelJson = {
    format: 'layers-model',
    generatedBy: json.generatedBy ?? 'keras',
    convertedBy: 'nsfwjs 4.4.0 (base64 bundle), repacked by scripts/nsfwjs-base.ts',
    modelTopology: json.modelTopology,
    weightsManifest: [{paths: ['weights.bin'], weights: manifest.flatMap((g) => g.weights)}],
  }
  const staging = `${dir}.staging-${process.pid}`
  await rm(staging, {recursive: true, force: true})
  await mkdir(staging, {recursive: true})
  await writeFile(path.join(staging, 'weights.bin'), weights)
  await writeFile(path.join(staging, 'model.json'), JSON.stringify(modelJson))
  await rm(dir, {recursive: true, force: true})
  await rename(staging, dir)
  return dir
}

async function main(): Promise<void> {
  const dir = await ensureMobileNetBase(process.argv[2] ? path.resolve(process.argv[2]) : MOBILENET_DIR)
  const json = await readFile(path.join(dir, 'model.json'))
  const weights = await readFile(path.join(dir, 'weights.bin'))
  const sha256 = createHash('sha256').update(json).update(weights).digest('hex')
  process.stdout.write(JSON.stringify({dir, output: MOBILENET_FEATURES, inputSize: [224, 224, 3], inputRange: [0, 1], weightsBytes: weights.byteLength, sha256}) + '\n')
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main()
