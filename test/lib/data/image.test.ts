// Tests of image decoding and normalisation on real MNIST digits and on deliberately bad files:
// every reject reason, unusual pixel formats, orientation, fits, and the JS fast path against sharp.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import zlib from 'node:zlib'
import {PNG} from 'pngjs'
import sharp from 'sharp'
import type {ImageSpec} from '../../../src/lib/config/schema.js'
import {
  decodeToPixels,
  describePreprocessing,
  normaliseImage,
  pixelsToFloat,
  PREPROCESSING_VERSION,
  SUPPORTED_FORMATS,
  type NormaliseResult,
} from '../../../src/lib/data/image.js'
import {mnistPng, readMnist} from '../../../src/lib/data/mnist.js'

const LIMITS = {maxPixels: 40_000_000, maxFileBytes: 50 * 1024 * 1024}
const GREY28: ImageSpec = {width: 28, height: 28, channels: 1, fit: 'fill'}
const RGB28: ImageSpec = {width: 28, height: 28, channels: 3, fit: 'fill'}
const spec = (width: number, height: number, channels: 1 | 3, fit: ImageSpec['fit'] = 'fill'): ImageSpec => ({width, height, channels, fit})

type Ok = Extract<NormaliseResult, {ok: true}>

function ok(result: NormaliseResult): Ok {
  assert.ok(result.ok, `expected success, got ${result.ok ? '' : `${result.reason}: ${result.detail}`}`)
  return result
}

function rejected(result: NormaliseResult, reason: string): string {
  assert.equal(result.ok, false, `expected ${reason}, got success`)
  if (result.ok) throw new Error('unreachable')
  assert.equal(result.reason, reason, result.detail)
  return result.detail
}

// A PNG written chunk by chunk, for inputs that encoders will not produce (16-bit with chosen
// values, a palette with tRNS, a 20000x20000 header over a tiny body).
function chunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data])
  const head = Buffer.alloc(4)
  head.writeUInt32BE(data.length)
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(zlib.crc32(body))
  return Buffer.concat([head, body, crc])
}

const SAMPLES_PER_PIXEL: Record<number, number> = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}

function craftPng(o: {width: number; height: number; colorType: number; bitDepth: 8 | 16; samples: number[]; extra?: Buffer[]}): Buffer {
  const spp = SAMPLES_PER_PIXEL[o.colorType]!
  const bytesPerSample = o.bitDepth / 8
  const rowBytes = o.width * spp * bytesPerSample
  const raw = Buffer.alloc(o.height * (rowBytes + 1))
  for (let y = 0; y < o.height; y++) {
    for (let x = 0; x < o.width * spp; x++) {
      const value = o.samples[y * o.width * spp + x]!
      const at = y * (rowBytes + 1) + 1 + x * bytesPerSample
      if (bytesPerSample === 2) raw.writeUInt16BE(value, at)
      else raw[at] = value
    }
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(o.width, 0)
  ihdr.writeUInt32BE(o.height, 4)
  ihdr[8] = o.bitDepth
  ihdr[9] = o.colorType
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    ...(o.extra ?? []),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

// The stored PNG's own channel count, and its pixels (sharp's raw output would otherwise expand
// greyscale to sRGB).
async function rawPixels(bytes: Uint8Array): Promise<{data: Buffer; channels: number; width: number; height: number}> {
  const {channels} = await sharp(bytes).metadata()
  const image = sharp(bytes)
  if (channels === 1) image.toColourspace('b-w')
  const {data, info} = await image.raw().toBuffer({resolveWithObject: true})
  return {data, channels, width: info.width, height: info.height}
}

const mean = (values: Uint8Array) => values.reduce((sum, v) => sum + v, 0) / values.length

const mnist = await readMnist('test', 0, 20)
const digits = await Promise.all(Array.from({length: mnist.count}, (_, i) => mnistPng(mnist, i)))
const original = (i: number) => mnist.pixels.subarray(i * 784, (i + 1) * 784)

describe('normaliseImage on MNIST digits', () => {
  it('keeps a 28x28 greyscale digit exactly as it was (fast path and sharp path)', async () => {
    for (let i = 0; i < digits.length; i++) {
      for (const fastPath of [true, false]) {
        const result = ok(await normaliseImage(digits[i]!, GREY28, LIMITS, {fastPath}))
        assert.equal(result.sourceFormat, 'png')
        assert.deepEqual([result.width, result.height, result.channels], [28, 28, 1])
        assert.equal(result.pixels.length, 784)
        assert.ok(Buffer.from(result.pixels).equals(original(i)), `digit ${i} changed (fastPath ${fastPath})`)
      }
    }
  })

  it('stores a PNG that decodes back to the same pixels', async () => {
    const result = ok(await normaliseImage(digits[0]!, GREY28, LIMITS))
    const decoded = await rawPixels(result.encoded)
    assert.deepEqual([decoded.width, decoded.height, decoded.channels], [28, 28, 1])
    assert.ok(decoded.data.equals(original(0)))
  })

  it('encodes deterministically: same input, same bytes', async () => {
    const jpeg = await sharp(Buffer.from(original(3)), {raw: {width: 28, height: 28, channels: 1}}).resize(64, 64).jpeg().toBuffer()
    for (const input of [digits[3]!, jpeg]) {
      for (const s of [GREY28, RGB28]) {
        const a = ok(await normaliseImage(input, s, LIMITS))
        const b = ok(await normaliseImage(Buffer.from(input), s, LIMITS))
        assert.ok(Buffer.from(a.encoded).equals(Buffer.from(b.encoded)))
        assert.ok(Buffer.from(a.pixels).equals(Buffer.from(b.pixels)))
      }
    }
  })

  it('every data.compression stores a PNG that decodes to the same pixels, small and photo-size, grey and RGB', async () => {
    const photo = await sharp(Buffer.from(original(5)), {raw: {width: 28, height: 28, channels: 1}}).resize(300, 200).jpeg().toBuffer()
    for (const input of [digits[5]!, photo]) {
      for (const s of [GREY28, RGB28, spec(96, 80, 1), spec(96, 80, 3)]) {
        const sizes: Record<string, number> = {}
        let reference: Buffer | undefined
        for (const compression of ['auto', 'none', 'fast', 'best'] as const) {
          const result = ok(await normaliseImage(input, s, LIMITS, {compression}))
          reference ??= Buffer.from(result.pixels)
          assert.ok(Buffer.from(result.pixels).equals(reference), `${compression}: pixels differ`)
          const decoded = await rawPixels(result.encoded)
          assert.deepEqual([decoded.width, decoded.height, decoded.channels], [s.width, s.height, s.channels], compression)
          assert.ok(decoded.data.equals(reference), `${compression} at ${s.width}x${s.height}x${s.channels}: stored PNG decodes to other pixels`)
          sizes[compression] = result.encoded.length
        }
        // 'none' keeps every byte: header, one filter byte per row, stored deflate blocks.
        assert.ok(sizes.none! > s.width * s.height * s.channels, JSON.stringify(sizes))
        assert.ok(sizes.best! < sizes.none!, JSON.stringify(sizes))
        assert.equal(sizes.auto, s.width * s.height <= 64 * 64 ? sizes.best : sizes.none, JSON.stringify(sizes))
      }
    }
  })

  it('converts a greyscale digit to RGB by repeating the grey value', async () => {
    for (const fastPath of [true, false]) {
      const result = ok(await normaliseImage(digits[1]!, RGB28, LIMITS, {fastPath}))
      assert.equal(result.pixels.length, 784 * 3)
      const grey = original(1)
      for (let p = 0; p < 784; p++) {
        assert.equal(result.pixels[p * 3], grey[p])
        assert.equal(result.pixels[p * 3 + 1], grey[p])
        assert.equal(result.pixels[p * 3 + 2], grey[p])
      }
    }
  })

  it('decodeToPixels gives the same pixels without an encoded PNG', async () => {
    const full = ok(await normaliseImage(digits[2]!, GREY28, LIMITS))
    const pixels = ok(await decodeToPixels(digits[2]!, GREY28, LIMITS))
    assert.equal(pixels.encoded.length, 0)
    assert.ok(Buffer.from(pixels.pixels).equals(Buffer.from(full.pixels)))
  })

  it('resizes a digit to another size and fit', async () => {
    for (const fit of ['fill', 'contain', 'cover'] as const) {
      const result = ok(await normaliseImage(digits[4]!, spec(14, 20, 1, fit), LIMITS))
      assert.deepEqual([result.width, result.height, result.channels, result.pixels.length], [14, 20, 1, 280])
      const decoded = await rawPixels(result.encoded)
      assert.deepEqual([decoded.width, decoded.height, decoded.channels], [14, 20, 1])
      assert.ok(decoded.data.equals(Buffer.from(result.pixels)))
    }
  })
})

describe('the PNG fast path agrees with sharp', () => {
  it('for every PNG row filter, greyscale and RGB', async () => {
    const rgb = Buffer.alloc(28 * 28 * 3)
    for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 37 + (i >> 5) * 11) % 256
    const grey = Buffer.from(original(5))
    for (const filterType of [0, 1, 2, 3, 4, -1]) {
      for (const [data, colorType, s] of [[grey, 0, GREY28], [grey, 0, RGB28], [rgb, 2, RGB28], [rgb, 2, GREY28]] as const) {
        const png = PNG.sync.write({width: 28, height: 28, data} as unknown as PNG, {colorType, inputColorType: colorType, inputHasAlpha: false, filterType})
        const fast = ok(await normaliseImage(png, s, LIMITS))
        const slow = ok(await normaliseImage(png, s, LIMITS, {fastPath: false}))
        assert.ok(Buffer.from(fast.pixels).equals(Buffer.from(slow.pixels)), `filter ${filterType}, colour type ${colorType} -> ${s.channels}`)
        assert.ok(Buffer.from(fast.encoded).equals(Buffer.from(slow.encoded)))
      }
    }
  })
})

describe('the PNG fast path declines what it cannot decode like sharp', () => {
  it('a PNG with an EXIF orientation chunk is rotated', async () => {
    // Big-endian TIFF header with one IFD entry: Orientation (0x0112) = 3, i.e. upside down.
    const exif = Buffer.from([0x4d, 0x4d, 0, 0x2a, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0])
    const samples = Array.from({length: 16}, (_, i) => i * 16)
    const png = craftPng({width: 4, height: 4, colorType: 0, bitDepth: 8, samples, extra: [chunk('eXIf', exif)]})
    const result = ok(await normaliseImage(png, spec(4, 4, 1), LIMITS))
    assert.deepEqual([...result.pixels], samples.toReversed())
  })
})

describe('normaliseImage rejects bad input', () => {
  it('a zero-byte file is empty', async () => {
    rejected(await normaliseImage(Buffer.alloc(0), GREY28, LIMITS), 'empty')
  })

  it('a file over maxFileBytes is too-large', async () => {
    const detail = rejected(await normaliseImage(digits[0]!, GREY28, {...LIMITS, maxFileBytes: 100}), 'too-large')
    assert.match(detail, /maxFileBytes/)
  })

  it('a text file named .png is an unsupported format', async () => {
    const detail = rejected(await normaliseImage(Buffer.from('hello, I am not a picture\n'), GREY28, LIMITS), 'unsupported-format')
    assert.match(detail, /not a recognised image format/)
  })

  it('names known image formats that are not supported (BMP, SVG)', async () => {
    const bmp = Buffer.alloc(60)
    bmp.write('BM', 0, 'latin1')
    assert.match(rejected(await normaliseImage(bmp, GREY28, LIMITS), 'unsupported-format'), /BMP/)
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')
    assert.match(rejected(await normaliseImage(svg, GREY28, LIMITS), 'unsupported-format'), /SVG/)
  })

  it('a PNG cut in half is corrupt (on both paths)', async () => {
    const big = await sharp(Buffer.from(original(6)), {raw: {width: 28, height: 28, channels: 1}}).resize(200, 200).png().toBuffer()
    for (const png of [digits[6]!, big]) {
      const half = png.subarray(0, png.length >> 1)
      rejected(await normaliseImage(half, GREY28, LIMITS), 'corrupt')
      rejected(await normaliseImage(half, GREY28, LIMITS, {fastPath: false}), 'corrupt')
    }
  })

  it('a JPEG cut in half is corrupt', async () => {
    const jpeg = await sharp(Buffer.from(original(7)), {raw: {width: 28, height: 28, channels: 1}}).resize(200, 200).jpeg().toBuffer()
    ok(await normaliseImage(jpeg, GREY28, LIMITS))
    rejected(await normaliseImage(jpeg.subarray(0, jpeg.length >> 1), GREY28, LIMITS), 'corrupt')
  })

  it('a PNG whose pixel data fails its CRC is corrupt', async () => {
    const png = Buffer.from(digits[8]!)
    const at = png.indexOf('IDAT', 8, 'latin1')
    png[at + 4 + png.readUInt32BE(at - 4)] ^= 0xff
    rejected(await normaliseImage(png, GREY28, LIMITS), 'corrupt')
  })

  it('a few image magic bytes and nothing else are corrupt', async () => {
    rejected(await normaliseImage(Buffer.from([0xff, 0xd8, 0xff, 0xe0]), GREY28, LIMITS), 'corrupt')
    rejected(await normaliseImage(Buffer.from('GIF89a'), GREY28, LIMITS), 'corrupt')
  })

  it('a 20000x20000 PNG is too-many-pixels, from its header, without decoding', async () => {
    // 1-bit deep so that the valid, complete file costs 50 MB to deflate here, not 400 MB.
    const ihdr = Buffer.alloc(13)
    ihdr.writeUInt32BE(20000, 0)
    ihdr.writeUInt32BE(20000, 4)
    ihdr[8] = 1
    const body = zlib.deflateSync(Buffer.alloc(20000 * (1 + 20000 / 8)), {level: 1})
    const bomb = Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', ihdr),
      chunk('IDAT', body),
      chunk('IEND', Buffer.alloc(0)),
    ])
    const detail = rejected(await normaliseImage(bomb, GREY28, LIMITS), 'too-many-pixels')
    assert.match(detail, /20000x20000/)
    // Only a header and a broken body: decoding would say corrupt, so this proves no decode happened.
    const headerOnly = Buffer.concat([bomb.subarray(0, 33), chunk('IDAT', Buffer.from([0x78, 0x9c, 0x00])), chunk('IEND', Buffer.alloc(0))])
    rejected(await normaliseImage(headerOnly, GREY28, LIMITS), 'too-many-pixels')
  })

  it('a JPEG over maxPixels is too-many-pixels (sharp limitInputPixels), with its size', async () => {
    const jpeg = await sharp({create: {width: 300, height: 200, channels: 3, background: '#808080'}}).jpeg().toBuffer()
    const detail = rejected(await normaliseImage(jpeg, GREY28, {...LIMITS, maxPixels: 59_999}), 'too-many-pixels')
    assert.match(detail, /300x200/)
    ok(await normaliseImage(jpeg, GREY28, {...LIMITS, maxPixels: 60_000}))
  })
})

describe('normaliseImage converts pixel formats', () => {
  it('grey+alpha is flattened onto black', async () => {
    const samples: number[] = []
    for (let i = 0; i < 16; i++) samples.push(200, [0, 128, 255, 255][i % 4]!)
    const png = craftPng({width: 4, height: 4, colorType: 4, bitDepth: 8, samples})
    const grey = ok(await normaliseImage(png, spec(4, 4, 1), LIMITS))
    assert.deepEqual([...grey.pixels.subarray(0, 4)], [0, 100, 200, 200])
    const rgb = ok(await normaliseImage(png, spec(4, 4, 3), LIMITS))
    assert.deepEqual([...rgb.pixels.subarray(0, 6)], [0, 0, 0, 100, 100, 100])
  })

  it('RGBA is flattened onto black, to 1 or 3 channels', async () => {
    const samples: number[] = []
    for (let i = 0; i < 16; i++) samples.push(255, 0, 0, [0, 128, 255, 255][i % 4]!)
    const png = craftPng({width: 4, height: 4, colorType: 6, bitDepth: 8, samples})
    const rgb = ok(await normaliseImage(png, spec(4, 4, 3), LIMITS))
    assert.deepEqual([...rgb.pixels.subarray(0, 9)], [0, 0, 0, 128, 0, 0, 255, 0, 0])
    const grey = ok(await normaliseImage(png, spec(4, 4, 1), LIMITS))
    assert.equal(grey.pixels.length, 16)
    assert.equal(grey.pixels[0], 0)
    assert.ok(grey.pixels[2]! > grey.pixels[1]! && grey.pixels[1]! > 0)
  })

  it('16-bit greyscale and RGB become 8-bit', async () => {
    const values = Array.from({length: 16}, (_, i) => i * 4096 + 100)
    const grey16 = craftPng({width: 4, height: 4, colorType: 0, bitDepth: 16, samples: values})
    const grey = ok(await normaliseImage(grey16, spec(4, 4, 1), LIMITS))
    values.forEach((v, i) => assert.ok(Math.abs(grey.pixels[i]! - v / 257) <= 1, `pixel ${i}: ${grey.pixels[i]} for ${v}`))
    const rgbSamples = values.flatMap((v) => [v, 65535 - v, 32768])
    const rgb16 = craftPng({width: 4, height: 4, colorType: 2, bitDepth: 16, samples: rgbSamples})
    const rgb = ok(await normaliseImage(rgb16, spec(4, 4, 3), LIMITS))
    rgbSamples.forEach((v, i) => assert.ok(Math.abs(rgb.pixels[i]! - v / 257) <= 1, `sample ${i}: ${rgb.pixels[i]} for ${v}`))
    assert.equal(ok(await normaliseImage(rgb16, spec(4, 4, 1), LIMITS)).pixels.length, 16)
  })

  it('a palette PNG with a transparent entry gets its colours, transparency black', async () => {
    const extra = [chunk('PLTE', Buffer.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])), chunk('tRNS', Buffer.from([255, 255, 255, 0]))]
    const png = craftPng({width: 4, height: 4, colorType: 3, bitDepth: 8, samples: Array.from({length: 16}, (_, i) => i % 4), extra})
    const rgb = ok(await normaliseImage(png, spec(4, 4, 3), LIMITS))
    assert.deepEqual([...rgb.pixels.subarray(0, 12)], [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0])
    const grey = ok(await normaliseImage(png, spec(4, 4, 1), LIMITS))
    assert.equal(grey.pixels[3], 0)
    assert.ok(grey.pixels[1]! > grey.pixels[0]! && grey.pixels[0]! > grey.pixels[2]!, 'green > red > blue in luminance')
  })

  it('a CMYK JPEG becomes sRGB', async () => {
    const cmyk = await sharp({create: {width: 8, height: 8, channels: 3, background: {r: 255, g: 0, b: 0}}}).toColourspace('cmyk').jpeg({quality: 100}).toBuffer()
    assert.equal((await sharp(cmyk).metadata()).space, 'cmyk')
    const rgb = ok(await normaliseImage(cmyk, spec(8, 8, 3), LIMITS))
    assert.equal(rgb.sourceFormat, 'jpeg')
    assert.ok(rgb.pixels[0]! > 200 && rgb.pixels[1]! < 40 && rgb.pixels[2]! < 40, `red expected, got ${[...rgb.pixels.subarray(0, 3)]}`)
    const grey = ok(await normaliseImage(cmyk, spec(8, 8, 1), LIMITS))
    assert.equal(grey.pixels.length, 64)
  })

  it('applies the EXIF orientation of a JPEG', async () => {
    // Stored 32x16, white left half; orientation 6 means "rotate 90 degrees clockwise to view",
    // which puts the white half on top.
    const white = await sharp({create: {width: 16, height: 16, channels: 3, background: '#ffffff'}}).png().toBuffer()
    const jpeg = await sharp({create: {width: 32, height: 16, channels: 3, background: '#000000'}})
      .composite([{input: white, left: 0, top: 0}])
      .jpeg({quality: 95})
      .withMetadata({orientation: 6})
      .toBuffer()
    const result = ok(await normaliseImage(jpeg, spec(16, 32, 1), LIMITS))
    assert.ok(mean(result.pixels.subarray(0, 16 * 14)) > 240, 'top is white')
    assert.ok(mean(result.pixels.subarray(16 * 18)) < 15, 'bottom is black')
  })

  it('decodes WebP (lossless: exactly), GIF and TIFF', async () => {
    const digit = sharp(Buffer.from(original(9)), {raw: {width: 28, height: 28, channels: 1}})
    const webp = ok(await normaliseImage(await digit.clone().webp({lossless: true}).toBuffer(), GREY28, LIMITS))
    assert.equal(webp.sourceFormat, 'webp')
    assert.ok(Buffer.from(webp.pixels).equals(original(9)))
    const gif = ok(await normaliseImage(await digit.clone().gif().toBuffer(), GREY28, LIMITS))
    assert.equal(gif.sourceFormat, 'gif')
    assert.equal(gif.pixels.length, 784)
    const tiff = ok(await normaliseImage(await digit.clone().tiff({compression: 'lzw'}).toBuffer(), GREY28, LIMITS))
    assert.equal(tiff.sourceFormat, 'tiff')
    assert.ok(Buffer.from(tiff.pixels).equals(original(9)))
  })

  it('decodes AVIF where sharp supports it', {skip: !SUPPORTED_FORMATS.includes('avif')}, async () => {
    const avif = await sharp({create: {width: 16, height: 16, channels: 3, background: {r: 255, g: 0, b: 0}}}).avif().toBuffer()
    const result = ok(await normaliseImage(avif, spec(8, 8, 3), LIMITS))
    assert.equal(result.sourceFormat, 'avif')
    assert.ok(result.pixels[0]! > 240 && result.pixels[1]! < 15 && result.pixels[2]! < 15)
  })

  it('takes the first frame of an animated GIF', async () => {
    const white = await sharp({create: {width: 8, height: 8, channels: 3, background: '#ffffff'}}).png().toBuffer()
    const black = await sharp({create: {width: 8, height: 8, channels: 3, background: '#000000'}}).png().toBuffer()
    for (const [frames, expected] of [[[white, black], 255], [[black, white], 0]] as const) {
      const gif = await sharp([...frames], {join: {animated: true}}).gif().toBuffer()
      assert.equal((await sharp(gif).metadata()).pages, 2)
      const result = ok(await normaliseImage(gif, spec(8, 8, 1), LIMITS))
      assert.equal(result.pixels.length, 64)
      assert.ok(result.pixels.every((v) => v === expected))
    }
  })

  it('accepts a JPEG with junk bytes before a marker (a warning, not an error)', async () => {
    const jpeg = await sharp({create: {width: 16, height: 16, channels: 3, background: {r: 10, g: 200, b: 30}}}).jpeg().toBuffer()
    const sos = jpeg.indexOf(Buffer.from([0xff, 0xda]))
    const junk = Buffer.concat([jpeg.subarray(0, sos), Buffer.from([1, 2, 3]), jpeg.subarray(sos)])
    ok(await normaliseImage(junk, spec(16, 16, 3), LIMITS))
  })

  it('fits another aspect ratio: contain letterboxes on black, cover crops, fill stretches', async () => {
    const wide = await sharp({create: {width: 40, height: 20, channels: 3, background: '#ffffff'}}).png().toBuffer()
    const contain = ok(await normaliseImage(wide, spec(20, 20, 1, 'contain'), LIMITS)).pixels
    assert.ok(mean(contain.subarray(0, 20 * 4)) < 5, 'top band black')
    assert.ok(mean(contain.subarray(20 * 16)) < 5, 'bottom band black')
    assert.ok(mean(contain.subarray(20 * 7, 20 * 13)) > 250, 'middle white')
    for (const fit of ['cover', 'fill'] as const) {
      assert.ok(ok(await normaliseImage(wide, spec(20, 20, 1, fit), LIMITS)).pixels.every((v) => v === 255), fit)
    }
  })
})

describe('preprocessing description', () => {
  it('pixelsToFloat maps 0..255 to 0..1', () => {
    const floats = pixelsToFloat(new Uint8Array([0, 51, 128, 255]))
    assert.ok(floats instanceof Float32Array)
    assert.deepEqual([...floats], [0, Math.fround(0.2), Math.fround(128 / 255), 1])
  })

  it('describePreprocessing names geometry, scaling and version, and is an ImageSpec', async () => {
    const description = describePreprocessing(spec(32, 24, 3, 'contain'))
    assert.deepEqual(description, {width: 32, height: 24, channels: 3, fit: 'contain', scale: 1 / 255, offset: 0, version: PREPROCESSING_VERSION})
    const result = ok(await decodeToPixels(digits[0]!, description, LIMITS))
    assert.equal(result.pixels.length, 32 * 24 * 3)
  })

  it('lists the common formats as supported', () => {
    for (const format of ['jpeg', 'png', 'webp', 'gif', 'tiff']) assert.ok(SUPPORTED_FORMATS.includes(format), format)
  })
})
