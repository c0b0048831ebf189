// The stored-block PNG writer of compression 'none' and its SIMD Adler-32: checksums against zlib's,
// bytes that zlib, pngjs and sharp all decode to the exact pixels, and the committed wasm binary
// against its WebAssembly text source.
import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {describe, it} from 'node:test'
import zlib from 'node:zlib'
import {PNG} from 'pngjs'
import seedrandom from 'seedrandom'
import sharp from 'sharp'
import {assemble, WAT_FILE} from '../../../scripts/build-wasm.js'
import {SCANLINE_ADLER32_WASM} from '../../../src/lib/data/scanline-adler32-wasm.js'
import {scanlineAdler32, scanlineAdler32InWasm, scanlineAdler32Js, storedPng} from '../../../src/lib/data/stored-png.js'

const SHAPES = [
  {width: 1, height: 1, channels: 1},
  {width: 5, height: 7, channels: 1},
  {width: 17, height: 33, channels: 3},
  {width: 16, height: 4, channels: 1},
  {width: 224, height: 224, channels: 3},
  // Rows longer than the 5552 bytes summed between reductions, and streams of several stored
  // blocks with rows crossing block boundaries.
  {width: 4096, height: 9, channels: 3},
  {width: 4096, height: 40, channels: 1},
] as const

function pixelsOf(width: number, height: number, channels: number, fill: 'random' | number, seed = 'px'): Buffer {
  const out = Buffer.alloc(width * height * channels)
  if (fill !== 'random') return out.fill(fill)
  const rng = seedrandom(seed)
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(rng() * 256)
  return out
}

/** The scanline stream: a 0 filter byte before each row. */
function scanlines(pixels: Uint8Array, height: number, stride: number): Buffer {
  const out = Buffer.alloc(height * (stride + 1))
  for (let y = 0; y < height; y++) out.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1)
  return out
}

/** zlib's Adler-32 of `data`: the last four bytes of a zlib stream of it. */
function zlibAdler(data: Uint8Array): number {
  const z = zlib.deflateSync(data, {level: 0})
  return z.readUInt32BE(z.length - 4)
}

function written(png: {byteLength: number; writeTo(out: Uint8Array, offset: number): void}, offset = 0, fill = 0): Buffer {
  const out = Buffer.alloc(offset + png.byteLength + 7, fill)
  png.writeTo(out, offset)
  return out
}

function chunks(png: Buffer): Array<{type: string; data: Buffer}> {
  const out = []
  for (let pos = 8; pos < png.length; ) {
    const length = png.readUInt32BE(pos)
    out.push({type: png.toString('latin1', pos + 4, pos + 8), data: png.subarray(pos + 8, pos + 8 + length)})
    assert.equal(png.readUInt32BE(pos + 8 + length), zlib.crc32(png.subarray(pos + 4, pos + 8 + length)), 'chunk CRC')
    pos += 12 + length
  }
  return out
}

describe('scanline Adler-32', () => {
  it('runs in WebAssembly SIMD on this runtime', () => {
    assert.equal(scanlineAdler32InWasm(), true)
  })

  it('equals zlib\'s Adler-32 of the scanline stream, in WebAssembly and in JS, for every shape and extreme bytes', () => {
    for (const {width, height, channels} of SHAPES) {
      for (const fill of ['random', 0, 255] as const) {
        const pixels = pixelsOf(width, height, channels, fill, `${width}x${height}`)
        const stride = width * channels
        const expected = zlibAdler(scanlines(pixels, height, stride))
        assert.equal(scanlineAdler32(pixels, height, stride), expected, `wasm ${width}x${height}x${channels} ${fill}`)
        assert.equal(scanlineAdler32Js(pixels, height, stride), expected, `js ${width}x${height}x${channels} ${fill}`)
      }
    }
  })

  it('gives the same answer after a larger image grew its memory, and for a view into a larger buffer', () => {
    const small = pixelsOf(5, 7, 3, 'random', 'small')
    const before = scanlineAdler32(small, 7, 15)
    scanlineAdler32(pixelsOf(4096, 64, 3, 'random', 'big'), 64, 4096 * 3)
    assert.equal(scanlineAdler32(small, 7, 15), before)
    const padded = Buffer.concat([Buffer.alloc(3, 9), small, Buffer.alloc(5, 9)])
    assert.equal(scanlineAdler32(padded.subarray(3, 3 + small.length), 7, 15), before)
  })

  it('is what scanline-adler32.wat assembles to', async () => {
    const binary = await assemble(await readFile(WAT_FILE, 'utf8'), path.basename(WAT_FILE))
    assert.ok(Buffer.from(binary).equals(Buffer.from(SCANLINE_ADLER32_WASM, 'base64')), 'run `npm run build:wasm`')
  })
})

describe('storedPng', () => {
  it('writes a PNG that zlib, pngjs and sharp decode to exactly the pixels, with stored blocks and valid checksums', async () => {
    for (const {width, height, channels} of SHAPES) {
      const pixels = pixelsOf(width, height, channels, 'random', `png ${width}x${height}`)
      const png = storedPng(pixels, width, height, channels)
      const bytes = written(png).subarray(0, png.byteLength)
      const parts = chunks(bytes)
      assert.deepEqual(parts.map((c) => c.type), ['IHDR', 'IDAT', 'IEND'])
      const stride = width * channels
      // inflateSync verifies the Adler-32; the stream is the scanlines with filter type 0.
      assert.ok(zlib.inflateSync(parts[1]!.data).equals(scanlines(pixels, height, stride)), `${width}x${height}x${channels} scanlines`)
      const streamLength = height * (stride + 1)
      assert.equal(parts[1]!.data.length, 2 + 5 * Math.ceil(streamLength / 65_535) + streamLength + 4, 'stored blocks of 65535 bytes')
      const read = PNG.sync.read(bytes)
      assert.deepEqual([read.width, read.height], [width, height])
      assert.equal((await sharp(bytes).metadata()).channels, channels)
      // b-w keeps grey as one channel (sharp's raw output would expand it to sRGB).
      const image = channels === 1 ? sharp(bytes).toColourspace('b-w') : sharp(bytes)
      const {data, info} = await image.raw().toBuffer({resolveWithObject: true})
      assert.deepEqual([info.width, info.height, info.channels], [width, height, channels])
      assert.ok(data.equals(pixels), `${width}x${height}x${channels}: sharp decodes other pixels`)
    }
  })

  it('writes every byte of its length and nothing outside it, the same bytes wherever it is written', () => {
    const pixels = pixelsOf(224, 224, 3, 'random', 'place')
    const png = storedPng(pixels, 224, 224, 3)
    const atStart = written(png, 0, 0).subarray(0, png.byteLength)
    const dirty = written(png, 13, 0xee)
    assert.ok(dirty.subarray(13, 13 + png.byteLength).equals(atStart))
    assert.ok(dirty.subarray(0, 13).equals(Buffer.alloc(13, 0xee)))
    assert.ok(dirty.subarray(13 + png.byteLength).equals(Buffer.alloc(7, 0xee)))
    // The same pixels give the same bytes: datasets built twice are identical.
    assert.ok(written(storedPng(Buffer.from(pixels), 224, 224, 3)).subarray(0, png.byteLength).equals(atStart))
  })

  it('refuses pixels that do not match the size', () => {
    assert.throws(() => storedPng(new Uint8Array(10), 2, 2, 3), /10 bytes is not 2x2x3/)
  })
})
