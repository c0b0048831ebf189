// Request payloads to model input: JSON number arrays (flat or nested) and base64 images, each
// checked against the model's input shape, with the client's mistakes reported as 4xx HttpErrors.
import {isUserError} from '../errors.js'
import {badRequest, HttpError} from './http-error.js'
import type {ServeMetrics} from './metrics.js'
import type {ServeOptions} from './options.js'
import {preprocessImage} from './predictor.js'
import type {ModelVersion} from './repository.js'

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * The deepest nesting of arrays and objects in a JSON text, counted on its bytes before parsing and
 * given up on past `max`: handlers walk parsed values recursively, so depth is bounded before they run.
 */
export function jsonDepthOver(body: Uint8Array, max: number): boolean {
  // Nesting needs an opening bracket per level: a body with at most `max` of them (a flat tensor, say)
  // passes without the byte-by-byte walk, counted with indexOf (memchr) instead.
  if (openingsAtMost(body, max)) return false
  let depth = 0
  let inString = false
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!
    if (inString) {
      if (c === 0x5c) i++ // backslash: skip the escaped character
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true
    } else if (c === 0x5d || c === 0x7d) depth--
  }
  return false
}

function openingsAtMost(body: Uint8Array, max: number): boolean {
  let n = 0
  for (const bracket of [0x5b, 0x7b]) {
    for (let i = body.indexOf(bracket); i >= 0; i = body.indexOf(bracket, i + 1)) if (++n > max) return false
  }
  return true
}

/** A JSON request body, nested at most `maxDepth` deep (serve.maxJsonDepth). */
export function parseJson(body: Buffer, maxDepth: number): unknown {
  if (body.length === 0) throw badRequest('the request body is empty; expected a JSON object')
  if (jsonDepthOver(body, maxDepth)) throw badRequest(`the JSON is nested deeper than serve.maxJsonDepth (${maxDepth} levels of arrays and objects)`)
  try {
    return JSON.parse(body.toString('utf8'))
  } catch (error) {
    const image = imageKind(body)
    if (image) {
      throw badRequest(
        `the body is a ${image} image, not JSON: send it to :classify with Content-Type: image/${image.toLowerCase()} (curl -H 'Content-Type: image/${image.toLowerCase()}' --data-binary @file), or base64-encode it in a JSON request`,
      )
    }
    throw badRequest(`malformed JSON: ${(error as Error).message}`)
  }
}

/** The image format a body starts with (a raw image posted without its Content-Type), if any. */
function imageKind(body: Buffer): string | undefined {
  if (body.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'PNG'
  if (body[0] === 0xff && body[1] === 0xd8 && body[2] === 0xff) return 'JPEG'
  if (body.subarray(0, 4).toString('latin1') === 'GIF8') return 'GIF'
  if (body.subarray(0, 4).toString('latin1') === 'RIFF' && body.subarray(8, 12).toString('latin1') === 'WEBP') return 'WebP'
  return undefined
}

export function inputSize(version: ModelVersion): number {
  const [h, w, c] = version.inputShape
  return h * w * c
}

export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(',')}]`
}

/**
 * Copies numbers from a flat or nested JSON array into `out` from `offset`; returns how many. Throws
 * on a non-number, and stops counting past `out`'s end (the caller reports the size mismatch).
 */
export function fillNumbers(data: unknown, out: Float32Array, offset: number, where: string): number {
  if (!Array.isArray(data)) throw badRequest(`${where}: expected an array of numbers`)
  let n = 0
  for (let i = 0; i < data.length; i++) {
    const value: unknown = data[i]
    if (typeof value === 'number') {
      // 1e999 parses as Infinity, and 1e39 is finite only until it is stored as FP32.
      if (!Number.isFinite(Math.fround(value))) throw badRequest(`${where}: value ${value} at position ${offset + n} is not a finite 32-bit float; NaN and Infinity are not accepted`)
      if (offset + n < out.length) out[offset + n] = value
      n++
    } else if (Array.isArray(value)) {
      n += fillNumbers(value, out, offset + n, where)
    } else {
      throw badRequest(`${where}: expected numbers, found ${value === null ? 'null' : typeof value}`)
    }
  }
  return n
}

/** Elements of a flat or nested array, in row-major order. */
export function flatten(data: unknown[]): unknown[] {
  return data.some(Array.isArray) ? (data as unknown[]).flat(Number.POSITIVE_INFINITY) : data
}

const BASE64 = /^[A-Za-z0-9+/\-_\s]*={0,2}\s*$/

export function decodeBase64(text: unknown, where: string): Buffer {
  if (typeof text !== 'string') throw badRequest(`${where}: expected a base64 string, found ${text === null ? 'null' : typeof text}`)
  if (!BASE64.test(text)) throw badRequest(`${where}: not valid base64`)
  return Buffer.from(text, 'base64')
}

export type ImageErrorStyle = 'json' | 'raw'

/**
 * Decodes and normalises images (sharp works in libuv's thread pool, off the event loop) exactly as
 * training did. In a raw image body an unsupported format is 415 and an oversized image 413; inside
 * JSON every image problem is 400.
 */
export async function imagesToInput(images: Buffer[], version: ModelVersion, options: ServeOptions, where: (i: number) => string, style: ImageErrorStyle = 'json', metrics?: ServeMetrics): Promise<Float32Array> {
  const size = inputSize(version)
  const out = new Float32Array(images.length * size)
  await Promise.all(images.map(async (bytes, i) => {
    try {
      const pixels = await preprocessImage(bytes, version.preprocessing!, where(i), options.imageLimits)
      out.set(pixels, i * size)
      metrics?.input(version.model, String(version.version), bytes, pixels, version.preprocessing!.scale, version.preprocessing!.offset)
    } catch (error) {
      if (!isUserError(error)) throw error
      let status = 400
      if (style === 'raw' && error.code === 'IMAGE_UNSUPPORTED_FORMAT') status = 415
      if (style === 'raw' && (error.code === 'IMAGE_TOO_LARGE' || error.code === 'IMAGE_TOO_MANY_PIXELS')) status = 413
      throw new HttpError(status, error.message)
    }
  }))
  return out
}

export function checkBatch(n: number, options: ServeOptions): void {
  if (n < 1) throw badRequest('no images in the request')
  if (n > options.maxBatchSize) throw badRequest(`${n} images in one request is over serve.maxBatchSize (${options.maxBatchSize}); split the request`)
}

/** The `top` highest scores of one row, best first (ties: lower index first). */
export function topScores(probabilities: Float32Array, row: number, numClasses: number, top: number): Array<{index: number; score: number}> {
  const scores: Array<{index: number; score: number}> = []
  for (let i = 0; i < numClasses; i++) scores.push({index: i, score: probabilities[row * numClasses + i]!})
  scores.sort((a, b) => b.score - a.score || a.index - b.index)
  return scores.slice(0, Math.max(1, Math.min(top, numClasses)))
}
