// PNGs whose zlib stream holds the scanlines in stored (uncompressed) deflate blocks: what ingest
// keeps for data.compression 'none' (the default for photo-size images). Such a PNG is nearly all
// pixels, so it is not built and then copied: storedPng() computes the one thing that needs a pass
// over the pixels ahead of time (the Adler-32 of the scanlines, in WebAssembly SIMD) and writes the
// PNG straight into its destination, a shard's write buffer, later. Built by hand because zlib
// (deflateSync at level 0) returns a new buffer per image, ~150 KB for 224x224 RGB, whose external
// memory made V8 collect the old generation every ~40 images of an ingest; the format is the plain
// one every PNG decoder reads (RFC 1950/1951, PNG spec sections 5, 9 and 10).
import {crc32} from '@node-rs/crc32'
import type {DeferredBytes} from './types.js'
import {SCANLINE_ADLER32_WASM} from './scanline-adler32-wasm.js'

/** The eight bytes every PNG file starts with. */
export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
// An empty IEND chunk: its CRC covers the chunk type only.
const IEND_CHUNK = [0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]
const IHDR_TYPE = [0x49, 0x48, 0x44, 0x52]
const IDAT_TYPE = [0x49, 0x44, 0x41, 0x54]
/** The most bytes one stored deflate block holds (its length field is 16 bits). */
const MAX_STORED = 65_535
/** zlib header: deflate with a 32 KiB window, no dictionary, check bits making 0x7801 a multiple of 31. */
const ZLIB_HEADER = [0x78, 0x01]
const ADLER_MOD = 65_521
/** zlib's NMAX: the most bytes summed before 32-bit sums must be reduced. */
const ADLER_NMAX = 5552

// The WebAssembly global as used here; TypeScript declares it only in the DOM library, which this
// Node project does not load.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => {exports: object}
}

interface AdlerModule {
  memory: {readonly buffer: ArrayBuffer; grow(pages: number): number}
  scanlineAdler32(ptr: number, rows: number, stride: number): number
}

/** The SIMD module, undefined before first use, null where this CPU or runtime lacks WebAssembly SIMD. */
let adlerModule: AdlerModule | null | undefined

function loadAdlerModule(): AdlerModule | null {
  if (adlerModule === undefined) {
    try {
      adlerModule = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(SCANLINE_ADLER32_WASM, 'base64'))).exports as unknown as AdlerModule
    } catch {
      adlerModule = null
    }
  }
  return adlerModule
}

/**
 * Adler-32 of a PNG scanline stream with filter type 0: each of `rows` rows of `stride` bytes of
 * `pixels` preceded by a zero byte. Plain JS; the reference for, and fallback of, the SIMD version.
 */
export function scanlineAdler32Js(pixels: Uint8Array, rows: number, stride: number): number {
  let a = 1
  let b = 0
  for (let y = 0, i = 0; y < rows; y++) {
    b = (b + a) % ADLER_MOD
    for (let left = stride; left > 0; ) {
      const end = i + Math.min(left, ADLER_NMAX)
      left -= end - i
      for (; i < end; i++) {
        a += pixels[i]!
        b += a
      }
      a %= ADLER_MOD
      b %= ADLER_MOD
    }
  }
  return ((b << 16) | a) >>> 0
}

/** scanlineAdler32Js computed in WebAssembly SIMD (~8x faster, copy into its memory included), when the runtime has it. */
export function scanlineAdler32(pixels: Uint8Array, rows: number, stride: number): number {
  const wasm = loadAdlerModule()
  if (wasm === null) return scanlineAdler32Js(pixels, rows, stride)
  const missing = pixels.length - wasm.memory.buffer.byteLength
  if (missing > 0) wasm.memory.grow(Math.ceil(missing / 65_536))
  new Uint8Array(wasm.memory.buffer, 0, pixels.length).set(pixels)
  return wasm.scanlineAdler32(0, rows, stride) >>> 0
}

/** Whether scanlineAdler32 runs in WebAssembly (for tests). */
export const scanlineAdler32InWasm = (): boolean => loadAdlerModule() !== null

function writeU32(out: Uint8Array, pos: number, value: number): void {
  out[pos] = value >>> 24
  out[pos + 1] = (value >>> 16) & 0xff
  out[pos + 2] = (value >>> 8) & 0xff
  out[pos + 3] = value & 0xff
}

/**
 * The PNG of `pixels` (8-bit grey for 1 channel, RGB for 3; rows packed top to bottom) with filter
 * type 0 and stored deflate blocks, as bytes that are written where they are needed. The same
 * pixels always give the same bytes. `pixels` must not change until the PNG has been written.
 */
export function storedPng(pixels: Uint8Array, width: number, height: number, channels: 1 | 3): DeferredBytes {
  const stride = width * channels
  if (pixels.length !== height * stride) throw new Error(`storedPng: ${pixels.length} bytes is not ${width}x${height}x${channels}`)
  const streamLength = height * (stride + 1)
  const blocks = Math.ceil(streamLength / MAX_STORED)
  const zlibLength = ZLIB_HEADER.length + 5 * blocks + streamLength + 4
  const adler = scanlineAdler32(pixels, height, stride)
  return {
    byteLength: PNG_SIGNATURE.length + 25 + 12 + zlibLength + IEND_CHUNK.length,
    writeTo(out, offset) {
      out.set(PNG_SIGNATURE, offset)
      const ihdr = offset + PNG_SIGNATURE.length
      writeU32(out, ihdr, 13)
      out.set(IHDR_TYPE, ihdr + 4)
      writeU32(out, ihdr + 8, width)
      writeU32(out, ihdr + 12, height)
      // Bit depth 8, grey or RGB, then deflate, the adaptive filter method, no interlace (zeros).
      out.set([8, channels === 1 ? 0 : 2, 0, 0, 0], ihdr + 16)
      writeU32(out, ihdr + 21, crc32(out.subarray(ihdr + 4, ihdr + 21)))
      const idat = ihdr + 25
      writeU32(out, idat, zlibLength)
      out.set(IDAT_TYPE, idat + 4)
      const z = idat + 8
      writeScanlines(out, z, pixels, height, stride)
      out.set(ZLIB_HEADER, z)
      for (let k = 0; k < blocks; k++) {
        const at = z + ZLIB_HEADER.length + k * (5 + MAX_STORED)
        const length = k === blocks - 1 ? streamLength - k * MAX_STORED : MAX_STORED
        // BFINAL on the last block, BTYPE 00 (stored), then LEN and NLEN, little-endian.
        out.set([k === blocks - 1 ? 1 : 0, length & 0xff, length >>> 8, ~length & 0xff, (~length >>> 8) & 0xff], at)
      }
      writeU32(out, z + zlibLength - 4, adler)
      // @node-rs/crc32's CRC-32 (the PNG/zlib one, with PCLMULQDQ where the CPU has it) is ~3x
      // faster than zlib.crc32 on a 150 KB chunk.
      writeU32(out, z + zlibLength, crc32(out.subarray(idat + 4, z + zlibLength)))
      out.set(IEND_CHUNK, z + zlibLength + 4)
    },
  }
}

/**
 * Lays out the scanline stream (a zero filter byte before each row) in stored blocks of up to
 * MAX_STORED bytes, leaving their 5-byte headers and the 2-byte zlib header free: all pixels in one
 * copy to just below where they go, then each row moved up into place from the last one down, with
 * memmove (copyWithin). A row crossing a block boundary moves in two parts. A copy per row from
 * `pixels` instead would allocate a view of it per row (~22 KB of heap for 224 rows).
 */
function writeScanlines(out: Uint8Array, z: number, pixels: Uint8Array, height: number, stride: number): void {
  // Where byte `s` of the scanline stream goes: after the zlib header and s / MAX_STORED + 1 block
  // headers. Every pixel's place is at or above z + 8 + its index in `pixels`.
  const place = (s: number) => z + ZLIB_HEADER.length + 5 * (Math.floor(s / MAX_STORED) + 1) + s
  const base = z + 8
  out.set(pixels, base)
  for (let y = height - 1; y >= 0; y--) {
    const rowStart = y * (stride + 1) + 1
    const source = base + y * stride
    // Parts of the row, last first: moving them up never overwrites a byte not yet moved.
    for (let end = rowStart + stride; end > rowStart; ) {
      const start = Math.max(rowStart, Math.floor((end - 1) / MAX_STORED) * MAX_STORED)
      out.copyWithin(place(start), source + start - rowStart, source + end - rowStart)
      end = start
    }
    out[place(rowStart - 1)] = 0
  }
}
