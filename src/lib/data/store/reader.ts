// Reading a committed dataset: a shard's records after checking its size and checksum against the
// manifest, and a whole split decoded into one pixel array for training and evaluation.
import {createHash} from 'node:crypto'
import {crc32c} from '@node-rs/crc32'
import type {SplitName} from '../../config/schema.js'
import {fileSize, joinPath, localCopy, openRead, readBytes} from '../../storage/index.js'
import {decodeExample} from '../example.js'
import {decodeStoredPng, decodeStoredWithSharp} from '../image.js'
import {readRecords, streamRecords} from '../tfrecord.js'
import type {DatasetManifest, DecodedSplit, ImageRecord, ShardInfo} from '../types.js'
import {corrupt, crc32cText} from './layout.js'
import {readManifest} from './manifest.js'

/** Shards up to this size are read whole (one read, then hashed and parsed in memory). */
const IN_MEMORY_SHARD_BYTES = 256 << 20

/** The checksum the manifest recorded for `shard` (crc32c, or sha256 for older shards) over `chunks`. */
async function checksum(shard: ShardInfo, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<{expected?: string; actual: string; kind: string}> {
  if (shard.crc32c === undefined && shard.sha256 !== undefined) {
    const hash = createHash('sha256')
    for await (const chunk of chunks) hash.update(chunk)
    return {expected: shard.sha256, actual: hash.digest('hex'), kind: 'sha256'}
  }
  let crc = 0
  for await (const chunk of chunks) crc = crc32c(chunk, crc)
  return {expected: shard.crc32c, actual: crc32cText(crc), kind: 'crc32c'}
}

/**
 * Yields the records of one committed shard, after checking the file's size and checksum against the
 * manifest: a shard is immutable once committed, so any difference means damage.
 */
export async function* readShard(dir: string, shard: ShardInfo): AsyncGenerator<ImageRecord> {
  const file = joinPath(dir, shard.file)
  const details = {store: dir, shard: shard.file}
  const size = await fileSize(file)
  if (size === undefined) throw corrupt(`shard ${shard.file} of dataset ${dir} is missing`, details)
  if (size !== shard.bytes) {
    throw corrupt(`shard ${shard.file} of dataset ${dir} is corrupt: ${size} bytes, the manifest says ${shard.bytes}`, details)
  }
  const verify = async (chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>) => {
    const {expected, actual, kind} = await checksum(shard, chunks)
    if (expected === undefined) throw corrupt(`shard ${shard.file} of dataset ${dir} has no checksum in the manifest`, details)
    if (actual !== expected) throw corrupt(`shard ${shard.file} of dataset ${dir} is corrupt: its ${kind} does not match the manifest`, details)
  }
  let payloads: Iterable<Buffer> | AsyncIterable<Buffer>
  // Big shards need random access: a remote one is downloaded to a temp file first (released below).
  let copy: Awaited<ReturnType<typeof localCopy>> | undefined
  try {
    if (size <= IN_MEMORY_SHARD_BYTES) {
      const buf = await readBytes(file)
      await verify([buf])
      payloads = readRecords(buf, file)
    } else {
      copy = await localCopy(file)
      // Too big to hold: check in one pass, then parse in a second rather than yield unverified records.
      await verify(await openRead(copy.path, {highWaterMark: 1 << 20}))
      payloads = streamRecords(copy.path)
    }
    let index = 0
    for await (const payload of payloads) {
      yield decodeExample(payload, `${file} record ${index}`)
      index++
    }
    if (index !== shard.count) {
      throw corrupt(`shard ${shard.file} of dataset ${dir} holds ${index} examples, the manifest says ${shard.count}`, details)
    }
  } finally {
    await copy?.release()
  }
}

/**
 * Decodes one stored image into `out` (height x width x channels): image.ts's fast PNG path, which
 * takes every PNG ingest writes, else sharp.
 */
async function decodeInto(encoded: Uint8Array, out: Uint8Array, width: number, height: number, channels: number): Promise<void> {
  const pixels = decodeStoredPng(encoded, width, height, channels)
  if (pixels !== undefined) out.set(pixels)
  else await decodeStoredWithSharp(encoded, out, width, height, channels)
}

/** Decodes every image of `split` into one NHWC uint8 array, in shard order. */
export async function loadSplit(dir: string, split: SplitName, manifest?: DatasetManifest): Promise<DecodedSplit> {
  const m = manifest ?? (await readManifest(dir))
  const {width, height, channels} = m.image
  const shards = m.shards.filter((s) => s.split === split)
  const count = shards.reduce((sum, s) => sum + s.count, 0)
  const frame = width * height * channels
  const pixels = new Uint8Array(count * frame)
  const labels = new Int32Array(count)
  const keys: string[] = []
  let i = 0
  for (const shard of shards) {
    for await (const r of readShard(dir, shard)) {
      const where = {store: dir, shard: shard.file, key: r.key}
      try {
        await decodeInto(r.encoded, pixels.subarray(i * frame, (i + 1) * frame), width, height, channels)
      } catch (error) {
        throw corrupt(`image ${r.key} in shard ${shard.file} of dataset ${dir} cannot be decoded: ${(error as Error).message}`, where, error)
      }
      if (!(r.label >= 0 && r.label < m.classes.length)) {
        throw corrupt(`image ${r.key} in shard ${shard.file} of dataset ${dir} has label ${r.label}, outside the ${m.classes.length} classes`, where)
      }
      labels[i] = r.label
      keys.push(r.key)
      i++
    }
  }
  return {split, count, height, width, channels, pixels, labels, keys}
}
