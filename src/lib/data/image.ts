// How an image file becomes model input: validation, decoding and normalisation to the ImageSpec.
// Ingest, predict and serve all call this module, so inference sees exactly what training saw.
import zlib from 'node:zlib'
import {PNG} from 'pngjs'
import sharp from 'sharp'
import type {ImageSpec} from '../config/schema.js'
import {ascii, sniffFormat} from './sniff.js'
import {PNG_SIGNATURE, storedPng} from './stored-png.js'
import type {Bytes} from './types.js'

export interface ImageLimits {
  /** Images whose width * height is above this are rejected before any pixel is decoded. */
  maxPixels: number
  /** Files larger than this are rejected without being looked at. */
  maxFileBytes: number
}

export type RejectReason = 'empty' | 'too-large' | 'too-many-pixels' | 'unsupported-format' | 'corrupt'

export type NormaliseResult<Encoded = Uint8Array> =
  | {
      ok: true
      /** PNG of the normalised image (empty from decodeToPixels). */
      encoded: Encoded
      /** Raw HWC uint8 pixels, height * width * channels bytes. */
      pixels: Uint8Array
      width: number
      height: number
      channels: number
      /** The detected input format: png, jpeg, webp, gif, tiff, avif or heif. */
      sourceFormat: string
    }
  | {ok: false; reason: RejectReason; detail: string}

/**
 * Bumped whenever a change here alters the pixels produced for some input (kernel, alpha policy,
 * colour conversion...), so that a model trained under an older version can be recognised.
 */
export const PREPROCESSING_VERSION = 1

/** The preprocessing saved with a trained model; it is itself an ImageSpec, plus the float scaling. */
export interface PreprocessingSpec extends ImageSpec {
  /** Model input = pixel * scale + offset. */
  scale: number
  offset: number
  version: number
}

export function describePreprocessing(spec: ImageSpec): PreprocessingSpec {
  return {
    width: spec.width,
    height: spec.height,
    channels: spec.channels,
    fit: spec.fit,
    scale: 1 / 255,
    offset: 0,
    version: PREPROCESSING_VERSION,
  }
}

/** The one pixel scaling used for training and inference: uint8 0..255 to float 0..1. */
export function pixelsToFloat(pixels: Uint8Array): Float32Array {
  const out = new Float32Array(pixels.length)
  for (let i = 0; i < pixels.length; i++) out[i] = pixels[i]! / 255
  return out
}

// Prebuilt sharp decodes AVIF but not HEIC (HEVC is patent-encumbered and left out of its libvips),
// so only avif is advertised; a HEIC file is still tried and rejected as unsupported if it fails.
export const SUPPORTED_FORMATS: readonly string[] = Object.freeze(
  (['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif'] as const).filter((name) => {
    const format = sharp.format[name === 'avif' ? 'heif' : name]
    return format?.input.buffer === true
  }),
)

interface PngHeader {
  width: number
  height: number
  bitDepth: number
  colorType: number
  interlace: number
  compression: number
  filter: number
}

/** The IHDR fields, read without decoding: enough for the pixel limit and the fast path. */
function readPngHeader(bytes: Buffer): PngHeader | undefined {
  if (bytes.length < 33 || bytes.readUInt32BE(8) !== 13 || ascii(bytes, 12, 16) !== 'IHDR') return undefined
  return {
    width: bytes.readUInt32BE(16),
    height: bytes.readUInt32BE(20),
    bitDepth: bytes[24]!,
    colorType: bytes[25]!,
    compression: bytes[26]!,
    filter: bytes[27]!,
    interlace: bytes[28]!,
  }
}

// Chunks that cannot change decoded pixels. Anything else (PLTE, tRNS, iCCP, gAMA, eXIf with an
// orientation, APNG frames, unknown chunks) sends the file down the sharp path.
const INERT_PNG_CHUNKS = new Set(['tEXt', 'zTXt', 'iTXt', 'pHYs', 'tIME'])

// The fast path runs on the event loop, synchronously; past this size sharp's overhead no longer
// dominates and a long synchronous inflate would stall a server.
const FAST_PATH_MAX_PIXELS = 256 * 256

/**
 * Fast path for PNGs that already are what the spec asks for (8-bit grey or RGB, exact size, not
 * interlaced, no colour-affecting chunks): MNIST-like datasets, and re-ingested normalised images.
 * For these sharp's per-call overhead is nearly all the cost (28x28 on 2 cores: ~50k decodes/s here
 * against ~1k/s through sharp) while its pipeline would be the identity, so decoding here gives the
 * same pixels; tests check that it matches sharp byte for byte. Returns undefined whenever it is not
 * sure (any CRC, zlib or structure problem included), and the file then goes to sharp, so damaged
 * files always get sharp's verdict.
 */
function decodeCanonicalPng(
  bytes: Buffer,
  header: PngHeader,
  spec: Pick<ImageSpec, 'width' | 'height' | 'channels'>,
  maxPixels = FAST_PATH_MAX_PIXELS,
): Uint8Array | undefined {
  const {width, height, bitDepth, colorType} = header
  if (width !== spec.width || height !== spec.height || bitDepth !== 8 || width * height > maxPixels) return undefined
  if (header.compression !== 0 || header.filter !== 0 || header.interlace !== 0) return undefined
  // RGB to grey is a colourimetric conversion in libvips; only sharp defines it.
  if (!(colorType === 0 || (colorType === 2 && spec.channels === 3))) return undefined
  const idat: Buffer[] = []
  let sawIend = false
  let lastType = ''
  for (let pos = 8; pos + 12 <= bytes.length; ) {
    const length = bytes.readUInt32BE(pos)
    const end = pos + 12 + length
    if (end > bytes.length) return undefined
    const type = ascii(bytes, pos + 4, pos + 8)
    if (zlib.crc32(bytes.subarray(pos + 4, pos + 8 + length)) !== bytes.readUInt32BE(pos + 8 + length)) return undefined
    if (type === 'IDAT') {
      if (idat.length > 0 && lastType !== 'IDAT') return undefined
      idat.push(bytes.subarray(pos + 8, pos + 8 + length))
    } else if (type === 'IEND') {
      sawIend = true
      break
    } else if (type !== 'IHDR' || pos !== 8) {
      if (!INERT_PNG_CHUNKS.has(type)) return undefined
    }
    lastType = type
    pos = end
  }
  if (!sawIend || idat.length === 0) return undefined
  const bpp = colorType === 0 ? 1 : 3
  const stride = width * bpp
  let raw: Buffer
  try {
    raw = zlib.inflateSync(idat.length === 1 ? idat[0]! : Buffer.concat(idat), {maxOutputLength: height * (stride + 1)})
  } catch {
    return undefined
  }
  if (raw.length !== height * (stride + 1)) return undefined
  const pixels = unfilter(raw, height, stride, bpp)
  if (pixels === undefined || bpp === spec.channels) return pixels
  // Grey to RGB: libvips replicates the band, so does this.
  const rgb = new Uint8Array(pixels.length * 3)
  for (let i = 0, j = 0; i < pixels.length; i++, j += 3) rgb[j] = rgb[j + 1] = rgb[j + 2] = pixels[i]!
  return rgb
}

/**
 * Decodes a PNG stored in a dataset (ingest wrote it at the dataset's size: 8-bit grey or RGB) with
 * the fast path above, whatever its size: loading a split is a batch job, not a server's event loop.
 * Undefined when the PNG is anything else; decodeStoredWithSharp then has the last word.
 */
export function decodeStoredPng(encoded: Uint8Array, width: number, height: number, channels: number): Uint8Array | undefined {
  const bytes = Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength)
  if (bytes.length < 8 || !bytes.subarray(0, 8).equals(PNG_SIGNATURE)) return undefined
  const header = readPngHeader(bytes)
  if (header === undefined || (channels !== 1 && channels !== 3)) return undefined
  return decodeCanonicalPng(bytes, header, {width, height, channels}, Number.POSITIVE_INFINITY)
}

/** A stored image the fast path does not take (another writer's PNG, say), decoded by sharp into `out`. */
export async function decodeStoredWithSharp(encoded: Uint8Array, out: Uint8Array, width: number, height: number, channels: number): Promise<void> {
  let image = sharp(encoded).resize(width, height, {fit: 'fill'})
  image = channels === 1 ? image.greyscale() : image.toColourspace('srgb')
  const {data, info} = await image.removeAlpha().raw().toBuffer({resolveWithObject: true})
  if (info.channels !== channels || data.length !== out.length) {
    throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}`)
  }
  out.set(data)
}

/** Reverses PNG row filters (spec section 9) for 8-bit samples, `bpp` bytes per pixel. */
function unfilter(raw: Buffer, height: number, stride: number, bpp: number): Uint8Array | undefined {
  const out = new Uint8Array(height * stride)
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!
    const src = y * (stride + 1) + 1
    const dst = y * stride
    const prev = dst - stride
    switch (filter) {
      case 0:
        out.set(raw.subarray(src, src + stride), dst)
        break
      case 1:
        for (let x = 0; x < stride; x++) out[dst + x] = raw[src + x]! + (x >= bpp ? out[dst + x - bpp]! : 0)
        break
      case 2:
        for (let x = 0; x < stride; x++) out[dst + x] = raw[src + x]! + (y > 0 ? out[prev + x]! : 0)
        break
      case 3:
        for (let x = 0; x < stride; x++) {
          const left = x >= bpp ? out[dst + x - bpp]! : 0
          const up = y > 0 ? out[prev + x]! : 0
          out[dst + x] = raw[src + x]! + ((left + up) >> 1)
        }
        break
      case 4:
        for (let x = 0; x < stride; x++) {
          const a = x >= bpp ? out[dst + x - bpp]! : 0
          const b = y > 0 ? out[prev + x]! : 0
          const c = x >= bpp && y > 0 ? out[prev + x - bpp]! : 0
          const p = a + b - c
          const pa = Math.abs(p - a)
          const pb = Math.abs(p - b)
          const pc = Math.abs(p - c)
          out[dst + x] = raw[src + x]! + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c)
        }
        break
      default:
        return undefined
    }
  }
  return out
}

const BLACK = {r: 0, g: 0, b: 0, alpha: 1}

/**
 * The general path: one sharp pipeline, one decode. Choices, all part of PREPROCESSING_VERSION 1:
 * - failOn 'error': the default 'warning' rejects JPEGs that decode fine but carry junk bytes
 *   before a marker (common from old cameras and editors); 'truncated' accepts a PNG whose IDAT CRC
 *   is wrong and a TIFF cut short. 'error' rejects both of those and PNGs/JPEGs cut in half
 *   (measured with sharp 0.35 / libvips 8.18).
 * - limitInputPixels: libvips checks it from the header, before decoding (decompression bombs).
 * - First page/frame only for animated GIF/WebP and multi-page TIFF.
 * - EXIF orientation applied, so a phone photo is upright as its owner saw it.
 * - Alpha is flattened onto black: digits and sketches are light strokes on a dark ground (MNIST),
 *   and a transparent background must become that ground, not white.
 * - Colour: libvips' colourimetric b-w conversion (linear-light luminance), or sRGB, with any ICC
 *   profile applied; CMYK, 16-bit, palette and grey+alpha all end up 8-bit. toColourspace('b-w')
 *   rather than greyscale(): same pixels at equal size, and ~1.7x the throughput on 28x28 PNGs.
 * - Resize with lanczos3, named explicitly so that a change of sharp's default cannot silently
 *   change the model's input; contain letterboxes on black, cover crops the centre. JPEG/WebP
 *   shrink-on-load (sharp's default) stays on: a large photo decodes several times faster, and the
 *   result is still a fixed function of the file.
 */
function runSharp(bytes: Buffer, spec: ImageSpec, limits: ImageLimits) {
  const image = sharp(bytes, {failOn: 'error', limitInputPixels: limits.maxPixels, autoOrient: true, page: 0, pages: 1})
  image.flatten({background: BLACK})
  if (spec.channels === 1) image.toColourspace('b-w')
  else image.toColourspace('srgb')
  image.resize(spec.width, spec.height, {fit: spec.fit, position: 'centre', kernel: 'lanczos3', background: BLACK})
  return image.raw({depth: 'uchar'}).toBuffer({resolveWithObject: true})
}

const reject = (reason: RejectReason, detail: string): NormaliseResult => ({ok: false, reason, detail})

function tooManyPixels(width: number | undefined, height: number | undefined, limits: ImageLimits): NormaliseResult {
  const size = width !== undefined && height !== undefined ? `${width}x${height} = ${width * height} pixels` : 'the image'
  return reject('too-many-pixels', `${size} is over the limit of ${limits.maxPixels} (data.maxPixels)`)
}

const UNSUPPORTED_FEATURE =
  /unsupported image format|unsupported (feature|codec|compression|jpeg process|colou?r ?space|sample format|bits? per sample|bit ?depth)|no decoding plugin|channel limit/i

async function classifySharpError(error: unknown, bytes: Buffer, format: string, limits: ImageLimits): Promise<NormaliseResult> {
  const message = (error instanceof Error ? error.message : String(error)).split('\n')[0]!.trim()
  if (/pixel limit/i.test(message)) {
    // Only the header is read here, so this is cheap even for a bomb.
    const metadata = await sharp(bytes, {limitInputPixels: false}).metadata().catch(() => undefined)
    return tooManyPixels(metadata?.width, metadata?.height, limits)
  }
  // Not every libvips 'unsupported' is about the format: libjpeg's "Unsupported marker type" means
  // damaged data. These are the messages of features a decoder lacks (HEVC, lossless JPEG...).
  if (UNSUPPORTED_FEATURE.test(message)) return reject('unsupported-format', `${format}: ${message}`)
  // libvips says only "Unknown error" for a PNG cut short; its chunk structure tells.
  const truncation = format === 'png' ? pngTruncation(bytes) : undefined
  if (truncation !== undefined) return reject('corrupt', `png could not be decoded: truncated, ${truncation}`)
  return reject('corrupt', `${format} could not be decoded: ${message}`)
}

/**
 * How a PNG is cut short, from its chunk structure alone (lengths, not CRCs): where the file ends
 * before its IEND chunk; undefined when every chunk is whole up to IEND.
 */
export function pngTruncation(bytes: Buffer): string | undefined {
  let last = 'signature'
  for (let pos = PNG_SIGNATURE.length; ; ) {
    if (pos >= bytes.length) return `the file ends after its ${last} (${bytes.length} bytes) without an IEND chunk`
    if (pos + 8 > bytes.length) return `the file ends inside a chunk header after its ${last} (${bytes.length} bytes)`
    const type = ascii(bytes, pos + 4, pos + 8)
    const end = pos + 12 + bytes.readUInt32BE(pos)
    if (end > bytes.length) return `the file ends inside its ${type} chunk (${bytes.length} of ${end} bytes)`
    if (type === 'IEND') return undefined
    last = `${type} chunk`
    pos = end
  }
}

// pngjs rather than a second sharp call: on 28x28 greyscale pngjs encodes ~20k images per CPU
// second (under 10% on top of a sharp decode) while a sharp encode, another trip through libvips
// and the libuv pool, about doubled the per-image cost (measured on 2 cores). Fixed settings and
// no time or text chunks make the bytes a pure function of the pixels (for a given zlib). Z_RLE is
// ~2x faster than the default strategy for 2% more bytes; no filtering is smallest for digits (256
// bytes average on MNIST against 318 adaptive), adaptive filtering wins for RGB photos.
function encodePng(pixels: Uint8Array, spec: ImageSpec, mode: 'fast' | 'best'): Uint8Array {
  const colorType = spec.channels === 1 ? 0 : 2
  const data = Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength)
  // PNG.sync.write reads only width, height and data; a PNG instance would allocate an RGBA buffer.
  const metadata = {width: spec.width, height: spec.height, data} as unknown as PNG
  return PNG.sync.write(metadata, {
    colorType,
    inputColorType: colorType,
    inputHasAlpha: false,
    bitDepth: 8,
    deflateLevel: mode === 'best' ? 9 : 1,
    deflateStrategy: 3,
    filterType: mode === 'best' && spec.channels !== 1 ? -1 : 0,
  })
}

/** Above this many pixels the encode is worth a trip to sharp: it runs in libuv's thread pool. */
const SHARP_ENCODE_PIXELS = 64 * 64

/**
 * How the normalised images stored in the dataset are compressed (`data.compression`). All are
 * lossless PNG, so every setting gives the same pixels to training; they trade ingest speed and
 * disk size:
 * - none: deflate "stored" blocks, no filtering (stored-png.ts): ~0.05 ms per 224x224 RGB image
 *   and the size of the raw pixels (147 KB), against 4-8 ms to decode and resize a 640x480 JPEG.
 * - fast: zlib level 1, no filtering.
 * - best: the smallest files: level 9 for small images, adaptive filtering for colour.
 * - auto (default): best for images up to 64x64 (digits, icons: a small cost next to decoding),
 *   none above, where compressing a photo-size PNG costs a third of the decode (~55% of raw size
 *   for photos at 'best').
 */
export type Compression = 'auto' | 'none' | 'fast' | 'best'

/**
 * Small images (digits, icons) are encoded with pngjs on the main thread, cheaply; larger ones
 * with sharp, off the main thread, so that the encodes of concurrent images run in parallel
 * instead of queueing on the event loop; 'none' is a checksum now and a copy into the shard later.
 */
async function encodeNormalised(pixels: Uint8Array, spec: ImageSpec, compression: Compression): Promise<Bytes> {
  const small = spec.width * spec.height <= SHARP_ENCODE_PIXELS
  const mode = compression === 'auto' ? (small ? 'best' : 'none') : compression
  if (mode === 'none') return storedPng(pixels, spec.width, spec.height, spec.channels)
  if (small) return encodePng(pixels, spec, mode)
  const raw = {width: spec.width, height: spec.height, channels: spec.channels}
  // b-w keeps a one-channel image greyscale in the PNG (sharp would write RGB).
  const pipeline = spec.channels === 1 ? sharp(pixels, {raw}).toColourspace('b-w') : sharp(pixels, {raw})
  return mode === 'fast'
    ? pipeline.png({compressionLevel: 1, adaptiveFiltering: false}).toBuffer()
    : pipeline.png({compressionLevel: 9, adaptiveFiltering: spec.channels !== 1}).toBuffer()
}

const NO_BYTES = new Uint8Array(0)

/** Options for tests and benchmarks; callers leave them alone. */
export interface NormaliseOptions {
  /** Allow the JS decoder for already-normalised PNGs (default true). */
  fastPath?: boolean
  /** How the stored PNG is compressed (default 'auto'). */
  compression?: Compression
}

async function normalise(bytes: Buffer, spec: ImageSpec, limits: ImageLimits, encode: boolean, options: NormaliseOptions): Promise<NormaliseResult<Bytes>> {
  if (bytes.length === 0) return reject('empty', 'the file is empty (0 bytes)')
  if (bytes.length > limits.maxFileBytes) {
    return reject('too-large', `${bytes.length} bytes is over the limit of ${limits.maxFileBytes} (data.maxFileBytes)`)
  }
  const sniffed = sniffFormat(bytes)
  if (sniffed === undefined) {
    // What the file is not, never what it holds: details go to quarantine.jsonl and logs, and a
    // file that is no image may be anything (a link's target, a credentials file).
    return reject('unsupported-format', `not a recognised image format (${bytes.length} bytes, no image signature); supported: ${SUPPORTED_FORMATS.join(', ')}`)
  }
  if (!sniffed.decodable) return reject('unsupported-format', `${sniffed.format} images are not supported; supported: ${SUPPORTED_FORMATS.join(', ')}`)
  const sourceFormat = sniffed.format
  let pixels: Uint8Array | undefined
  if (sourceFormat === 'png') {
    const header = readPngHeader(bytes)
    if (header !== undefined) {
      if (header.width * header.height > limits.maxPixels) return tooManyPixels(header.width, header.height, limits)
      if (options.fastPath !== false) pixels = decodeCanonicalPng(bytes, header, spec)
    }
  }
  if (pixels === undefined) {
    let decoded: Awaited<ReturnType<typeof runSharp>>
    try {
      decoded = await runSharp(bytes, spec, limits)
    } catch (error) {
      return classifySharpError(error, bytes, sourceFormat, limits)
    }
    const {data, info} = decoded
    if (info.channels !== spec.channels || info.width !== spec.width || info.height !== spec.height ||
      data.length !== spec.width * spec.height * spec.channels) {
      // Not seen with any input tried; quarantining the image beats feeding a wrong shape to a model.
      return reject('unsupported-format', `${sourceFormat} decoded to ${info.width}x${info.height}x${info.channels}, not ${spec.width}x${spec.height}x${spec.channels}`)
    }
    pixels = data
  }
  return {
    ok: true,
    encoded: encode ? await encodeNormalised(pixels, spec, options.compression ?? 'auto') : NO_BYTES,
    pixels,
    width: spec.width,
    height: spec.height,
    channels: spec.channels,
    sourceFormat,
  }
}

function joined(result: NormaliseResult<Bytes>): NormaliseResult {
  if (!result.ok || result.encoded instanceof Uint8Array) return result as NormaliseResult
  const encoded = Buffer.alloc(result.encoded.byteLength)
  result.encoded.writeTo(encoded, 0)
  return {...result, encoded}
}

/** Validates, decodes and normalises one image file to `spec`, with the PNG stored in the dataset. */
export async function normaliseImage(bytes: Buffer, spec: ImageSpec, limits: ImageLimits, options: NormaliseOptions = {}): Promise<NormaliseResult> {
  return joined(await normalise(bytes, spec, limits, true, options))
}

/** normaliseImage with the PNG possibly deferred (written later, straight into a shard): for ingest. */
export async function normaliseImageDeferred(bytes: Buffer, spec: ImageSpec, limits: ImageLimits, options: NormaliseOptions = {}): Promise<NormaliseResult<Bytes>> {
  return normalise(bytes, spec, limits, true, options)
}

/** normaliseImage without the PNG encoding (`encoded` is empty): for predict and serve. */
export async function decodeToPixels(bytes: Buffer, spec: ImageSpec, limits: ImageLimits, options: NormaliseOptions = {}): Promise<NormaliseResult> {
  return joined(await normalise(bytes, spec, limits, false, options))
}
