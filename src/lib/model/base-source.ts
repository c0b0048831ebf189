// Where a pretrained base's files come from: a local folder, or a gs:// / https:// model.json that is
// downloaded once into a local cache, checked against its sha256 pin, and renamed into place whole.
import {createHash, randomBytes} from 'node:crypto'
import {mkdir, readFile, rename, rm, stat, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {isRemote, readBytes} from '../storage/index.js'
import {UserError} from '../errors.js'

/** The model.json fields a base needs (layers or graph model). */
export interface BaseModelJson {
  format?: string
  modelTopology: Record<string, unknown>
  weightsManifest: Array<{paths: string[]; weights: Array<{name: string; shape: number[]; dtype: string; quantization?: unknown}>}>
  [key: string]: unknown
}

export interface BaseFiles {
  /** Local folder holding model.json and its weight files. */
  dir: string
  modelJson: BaseModelJson
  /** The weight files concatenated in manifest order. */
  weights: Uint8Array
  /** sha256 of model.json's bytes followed by the weight files in manifest order (what a pin names). */
  sha256: string
  /** Whether this call downloaded the files (false: local source or cache hit). */
  downloaded: boolean
}

/** The cache of downloaded bases and computed features: ML_CACHE_DIR, else $XDG_CACHE_HOME/ml, else ~/.cache/ml. */
export function cacheRoot(): string {
  if (process.env.ML_CACHE_DIR) return path.resolve(process.env.ML_CACHE_DIR)
  const xdg = process.env.XDG_CACHE_HOME
  return path.join(xdg ? path.resolve(xdg) : path.join(os.homedir(), '.cache'), 'ml')
}

const isUrl = (s: string) => /^https?:\/\//i.test(s)

/** A source names either model.json itself or the folder holding it. */
function modelJsonLocation(source: string): string {
  if (/\.json$/i.test(source.split('?')[0]!)) return source
  return source.replace(/\/+$/, '') + '/model.json'
}

/** A sibling of model.json: weight paths in the manifest are relative to it. */
function sibling(modelJsonAt: string, file: string): string {
  if (isUrl(modelJsonAt)) return new URL(file, modelJsonAt).toString()
  const slash = modelJsonAt.lastIndexOf('/')
  return modelJsonAt.slice(0, slash + 1) + file
}

function hashOf(json: Uint8Array, weights: Uint8Array[]): string {
  const hash = createHash('sha256').update(json)
  for (const w of weights) hash.update(w)
  return hash.digest('hex')
}

function parseModelJson(bytes: Uint8Array, where: string): BaseModelJson {
  let json: BaseModelJson
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8')) as BaseModelJson
  } catch (error) {
    throw new UserError(`${where} is not JSON: ${(error as Error).message}`, {code: 'BASE_INVALID', exit: 'data', cause: error})
  }
  if (!json || typeof json.modelTopology !== 'object' || !Array.isArray(json.weightsManifest)) {
    throw new UserError(`${where} is not a TensorFlow.js model.json (needs modelTopology and weightsManifest)`, {
      code: 'BASE_INVALID',
      exit: 'data',
      suggestions: ['Point model.base.source at a TensorFlow.js layers or graph model (tensorflowjs_converter output).'],
    })
  }
  return json
}

function checkPin(source: string, pin: string | undefined, actual: string): void {
  if (pin && pin !== actual) {
    throw new UserError(`the base at ${source} does not match its pin: sha256 is ${actual}, model.base.sha256 says ${pin}`, {
      code: 'BASE_PIN_MISMATCH',
      exit: 'data',
      details: {source, expected: pin, actual},
      suggestions: ['Check that the source is the model you meant; if it is, set model.base.sha256 to the actual value.'],
    })
  }
}

async function readAll(source: string, fetchOne: (location: string) => Promise<Uint8Array>) {
  const at = modelJsonLocation(source)
  const jsonBytes = await fetchOne(at)
  const modelJson = parseModelJson(jsonBytes, at)
  const weights: Uint8Array[] = []
  for (const group of modelJson.weightsManifest) for (const file of group.paths) weights.push(await fetchOne(sibling(at, file)))
  return {jsonBytes, modelJson, weights}
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

async function fetchRemote(location: string): Promise<Uint8Array> {
  try {
    if (!isUrl(location)) return new Uint8Array(await readBytes(location))
    const response = await fetch(location, {redirect: 'follow'})
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`)
    return new Uint8Array(await response.arrayBuffer())
  } catch (error) {
    throw new UserError(`cannot download ${location}: ${(error as Error).message}`, {
      code: 'BASE_DOWNLOAD_FAILED',
      exit: 'service',
      cause: error,
      suggestions: ['Check the URL and the network, or download the model and point model.base.source at the folder.'],
    })
  }
}

async function readLocal(location: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(location))
  } catch (error) {
    throw new UserError(`cannot read ${location}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      code: 'BASE_NOT_FOUND',
      exit: 'data',
      cause: error,
      suggestions: ['Point model.base.source at a folder with model.json and its weight files (`npm run base:mobilenet` writes one).'],
    })
  }
}

/** The cache folder of a remote source: one per URL. */
export function cacheDirFor(source: string, root = cacheRoot()): string {
  return path.join(root, 'bases', createHash('sha256').update(source).digest('hex').slice(0, 24))
}

const COMPLETE = 'complete.json'

async function readCached(dir: string): Promise<BaseFiles | undefined> {
  let marker: {sha256: string}
  try {
    marker = JSON.parse(await readFile(path.join(dir, COMPLETE), 'utf8')) as {sha256: string}
  } catch {
    return undefined
  }
  const {jsonBytes, modelJson, weights} = await readAll(dir, readLocal)
  const sha256 = hashOf(jsonBytes, weights)
  // A cache entry edited or damaged after it was written is downloaded again.
  if (sha256 !== marker.sha256) return undefined
  return {dir, modelJson, weights: concat(weights), sha256, downloaded: false}
}

/** Writes the files into a staging folder and renames it into place: never a half-written entry. */
async function writeCacheEntry(dir: string, source: string, jsonBytes: Uint8Array, modelJson: BaseModelJson, weights: Uint8Array[], sha256: string): Promise<void> {
  const staging = `${dir}.staging-${process.pid}-${randomBytes(4).toString('hex')}`
  await mkdir(staging, {recursive: true})
  try {
    await writeFile(path.join(staging, 'model.json'), jsonBytes)
    let i = 0
    for (const group of modelJson.weightsManifest) {
      for (const file of group.paths) {
        const target = path.join(staging, file)
        if (!target.startsWith(staging + path.sep)) throw new UserError(`model.json names a weight file outside its folder: ${file}`, {code: 'BASE_INVALID', exit: 'data'})
        await mkdir(path.dirname(target), {recursive: true})
        await writeFile(target, weights[i++]!)
      }
    }
    await writeFile(path.join(staging, COMPLETE), JSON.stringify({source, sha256, at: new Date().toISOString()}) + '\n')
    await rm(dir, {recursive: true, force: true})
    await rename(staging, dir)
  } catch (error) {
    await rm(staging, {recursive: true, force: true})
    // Another process renamed the same entry into place first: theirs is as good as ours.
    if ((error as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (error as NodeJS.ErrnoException).code === 'EEXIST') return
    throw error
  }
}

/**
 * The files of a base: read in place for a local source; for gs:// and https:// from the cache, or
 * downloaded into it. The pin, when given, is checked either way; a download that fails or does not
 * match leaves no cache entry behind.
 */
export async function fetchBase(source: string, options: {sha256?: string; cacheRoot?: string} = {}): Promise<BaseFiles> {
  if (!isUrl(source) && !isRemote(source)) {
    const local = path.resolve(source)
    const {jsonBytes, modelJson, weights} = await readAll(local, readLocal)
    const sha256 = hashOf(jsonBytes, weights)
    checkPin(source, options.sha256, sha256)
    const dir = /\.json$/i.test(local) ? path.dirname(local) : local
    return {dir, modelJson, weights: concat(weights), sha256, downloaded: false}
  }
  const dir = cacheDirFor(source, options.cacheRoot)
  const cached = await readCached(dir)
  if (cached && (!options.sha256 || cached.sha256 === options.sha256)) return cached
  const {jsonBytes, modelJson, weights} = await readAll(source, fetchRemote)
  const sha256 = hashOf(jsonBytes, weights)
  checkPin(source, options.sha256, sha256)
  await mkdir(path.dirname(dir), {recursive: true})
  await writeCacheEntry(dir, source, jsonBytes, modelJson, weights, sha256)
  return {dir, modelJson, weights: concat(weights), sha256, downloaded: true}
}

/** Whether a path exists (for callers that report what the cache holds). */
export async function cacheHas(dir: string): Promise<boolean> {
  return stat(path.join(dir, COMPLETE)).then(
    () => true,
    () => false,
  )
}
