// The one image sniffer: what format a file is, and its size, from its first bytes alone. Ingest,
// predict and serve validate with sniffFormat before any decoder runs; serving's drift statistics
// read sizes with imageSize.
import {PNG_SIGNATURE} from './stored-png.js'

export interface Sniffed {
  format: string
  /** False for image formats that are recognised only to say clearly that they are not supported. */
  decodable: boolean
}

const HEIF_BRANDS = new Set(['heic', 'heix', 'hevc', 'hevx', 'heim', 'heis', 'hevm', 'hevs', 'mif1', 'msf1'])

export function ascii(bytes: Buffer, start: number, end: number): string {
  return bytes.length >= end ? bytes.toString('latin1', start, end) : ''
}

/**
 * Identifies the format from magic bytes. Done in JS before sharp so that text and other non-images
 * are rejected without a native call, and so that SVG, a document that sharp would rasterise with
 * librsvg, is refused rather than rendered.
 */
export function sniffFormat(bytes: Buffer): Sniffed | undefined {
  const b = bytes
  if (b.length >= 8 && b.subarray(0, 8).equals(PNG_SIGNATURE)) return {format: 'png', decodable: true}
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return {format: 'jpeg', decodable: true}
  if (ascii(b, 0, 6) === 'GIF87a' || ascii(b, 0, 6) === 'GIF89a') return {format: 'gif', decodable: true}
  if (ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP') return {format: 'webp', decodable: true}
  if (b.length >= 4 && ((b[0] === 0x49 && b[1] === 0x49 && (b[2] === 0x2a || b[2] === 0x2b) && b[3] === 0) ||
    (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && (b[3] === 0x2a || b[3] === 0x2b)))) {
    return {format: 'tiff', decodable: true}
  }
  if (ascii(b, 4, 8) === 'ftyp') {
    const brand = ascii(b, 8, 12)
    // AVIF files may carry the generic mif1 as major brand and avif among the compatible ones.
    const brands = b.toString('latin1', 8, Math.min(b.length, Math.max(12, b.readUInt32BE(0))))
    if (brand === 'avif' || brand === 'avis' || (HEIF_BRANDS.has(brand) && /avi[fs]/.test(brands))) return {format: 'avif', decodable: true}
    if (HEIF_BRANDS.has(brand)) return {format: 'heif', decodable: true}
    if (brand === 'jxl ') return {format: 'JPEG XL', decodable: false}
  }
  if (ascii(b, 0, 2) === 'BM' && b.length >= 26) return {format: 'BMP', decodable: false}
  if (b.length >= 6 && b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0 && b[5] === 0) return {format: 'ICO', decodable: false}
  if (b.length >= 2 && b[0] === 0xff && b[1] === 0x0a) return {format: 'JPEG XL', decodable: false}
  if (ascii(b, 4, 8) === 'jP  ' || (b.length >= 4 && b[0] === 0xff && b[1] === 0x4f && b[2] === 0xff && b[3] === 0x51)) {
    return {format: 'JPEG 2000', decodable: false}
  }
  if (ascii(b, 0, 4) === '8BPS') return {format: 'PSD', decodable: false}
  if (ascii(b, 0, 5) === '%PDF-') return {format: 'PDF', decodable: false}
  const head = b.toString('latin1', 0, Math.min(b.length, 512)).trimStart().toLowerCase()
  if (head.startsWith('<svg') || (head.startsWith('<?xml') && head.includes('<svg'))) return {format: 'SVG', decodable: false}
  return undefined
}

export interface ImageSize {
  width: number
  height: number
}

/**
 * Width and height from the header of a PNG, JPEG, GIF, WebP or BMP file; undefined for other
 * formats or a header too short to tell (the caller then records nothing).
 */
export function imageSize(bytes: Uint8Array): ImageSize | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  switch (sniffFormat(b)?.format) {
    case 'png':
      return b.length >= 24 && ascii(b, 12, 16) === 'IHDR' ? {width: b.readUInt32BE(16), height: b.readUInt32BE(20)} : undefined
    case 'gif':
      return b.length >= 10 ? {width: b.readUInt16LE(6), height: b.readUInt16LE(8)} : undefined
    case 'BMP':
      return {width: Math.abs(b.readInt32LE(18)), height: Math.abs(b.readInt32LE(22))}
    case 'webp':
      return webpSize(b)
    case 'jpeg':
      return jpegSize(b)
    default:
      return undefined
  }
}

function webpSize(b: Buffer): ImageSize | undefined {
  if (b.length < 30) return undefined
  const chunk = ascii(b, 12, 16)
  if (chunk === 'VP8 ' && b[23] === 0x9d && b[24] === 0x01 && b[25] === 0x2a) return {width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff}
  if (chunk === 'VP8L' && b[20] === 0x2f) {
    const bits = b.readUInt32LE(21)
    return {width: (bits & 0x3fff) + 1, height: ((bits >> 14) & 0x3fff) + 1}
  }
  if (chunk === 'VP8X') return {width: b.readUIntLE(24, 3) + 1, height: b.readUIntLE(27, 3) + 1}
  return undefined
}

/** Walks the JPEG segments to the first start-of-frame marker, which holds the size. */
function jpegSize(b: Buffer): ImageSize | undefined {
  let i = 2
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return undefined
    const marker = b[i + 1]!
    if (marker === 0xff) {
      i++
      continue
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2
      continue
    }
    const length = b.readUInt16BE(i + 2)
    const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc
    if (sof) return {width: b.readUInt16BE(i + 7), height: b.readUInt16BE(i + 5)}
    i += 2 + length
  }
  return undefined
}
