// Writing one shard: records framed as TFRecords straight into a write buffer, the file's checksum
// carried along, and on close the shard file and its key list published (still invisible to
// readers until the store's next commit names them in the manifest).
import type {ImageSpec, SplitName} from '../../config/schema.js'
import {createWriter, joinPath, remove, writeFileAtomic} from '../../storage/index.js'
import {prepareExample} from '../example.js'
import {extendCrc32cOverRecord, frameRecord, PAYLOAD_OFFSET, RECORD_OVERHEAD} from '../tfrecord.js'
import type {RecordToWrite, ShardInfo} from '../types.js'
import {crc32cText, originsFileOf} from './layout.js'

/** Framed records are written in chunks of about this size, from a buffer of this size. */
const WRITE_CHUNK_BYTES = 1 << 20
const WRITE_BUFFER_BYTES = 2 << 20

/** A shard open for appending; see DatasetStore.openShard. */
export interface ShardWriter {
  readonly split: SplitName
  /** Records appended so far. */
  readonly count: number
  /** Appends one record; the next append or close must wait until it has settled. */
  append(record: RecordToWrite): Promise<void>
  /** Flushes, syncs and publishes the shard file and its key list; pending until commit(). */
  close(): Promise<ShardInfo>
  /** Deletes what was written; the store forgets the shard. */
  abort(): Promise<void>
}

/** What a shard records of each example besides its bytes. */
export interface ShardEntry {
  key: string
  text: string
  origin: string | undefined
}

/** Where a shard goes and whom it tells: see openShardWriter. */
export interface ShardTarget {
  /** The store's folder; `file` and `keysFile` are relative to it. */
  dir: string
  file: string
  keysFile: string
  split: SplitName
  /** The manifest version the shard will be published in. */
  addedIn: number
  image: Pick<ImageSpec, 'width' | 'height' | 'channels'>
  /** The store's class names by index as they stand now (they grow while a run adds classes). */
  classNames(): readonly string[]
  /** The shard is closed, its file and key list durable: `records` are what it holds. */
  published(info: ShardInfo, records: ReadonlyArray<ShardEntry>): void
  /** The shard is no longer open (published or aborted); called once. */
  released(): void
}

/**
 * Opens a shard whose records are written as they are appended, so that a large shard (4096 photos
 * at 224x224 are ~600 MB) is never held in memory and its writing overlaps the decoding of the
 * next images.
 */
export function openShardWriter(target: ShardTarget): ShardWriter {
  const {dir, file, keysFile, split, addedIn} = target
  const {width, height, channels} = target.image
  const writer = createWriter(joinPath(dir, file))
  // A failed open surfaces on the first append; until then it must not be an unhandled rejection.
  writer.catch(() => {})
  // The file's checksum, carried along record by record (from each record's own payload CRC,
  // without a second pass over large payloads). CRC-32C rather than a cryptographic hash: it
  // guards against damage, which is the threat (whoever can rewrite a shard can rewrite the
  // manifest too), at ~10x sha256's speed, for ingest and every load.
  let crc = 0
  const records: ShardEntry[] = []
  // Records are framed straight into a write buffer, written and then reused: no per-record
  // allocation (photo records are ~150 KB each). Two buffers take turns: records are framed into
  // one while the other is written, so an append waits for the disk only if it fills a chunk
  // before the previous write is done. (Awaiting every write held the ingest's in-order handling
  // up ~5 ms per MB, the write queueing in libuv's pool behind the image decodes.) Calls must
  // not overlap: one arriving mid-append could overwrite bytes not yet written.
  let buffer = Buffer.alloc(0)
  let spare = Buffer.alloc(0)
  /** The write of the spare buffer's bytes; its error surfaces at the next append or close. */
  let writing: Promise<void> = Promise.resolve()
  let filled = 0
  let bytes = 0
  let closed = false
  let appending = false
  let open = true
  /** True the first time only: the shard leaves the store's open shards once. */
  const release = () => {
    if (!open) return false
    open = false
    target.released()
    return true
  }
  const notWhileAppending = (method: string) => {
    if (appending) throw new Error(`ShardWriter.${method}: the previous append has not settled`)
  }
  const writeBuffered = async () => {
    if (filled === 0) return
    await writing
    const data = buffer.subarray(0, filled)
    bytes += filled
    filled = 0
    ;[buffer, spare] = [spare, buffer]
    writing = writer.then((w) => w.write(data))
    writing.catch(() => {})
  }
  const appendOne = async (r: RecordToWrite) => {
    if (r.width !== width || r.height !== height || r.channels !== channels) {
      throw new Error(`writeShard: record ${r.key} is ${r.width}x${r.height}x${r.channels}, store is ${width}x${height}x${channels}`)
    }
    if (target.classNames()[r.label] !== r.text) throw new Error(`writeShard: record ${r.key} has label ${r.label} but text "${r.text}"`)
    const example = prepareExample(r)
    const size = example.size + RECORD_OVERHEAD
    if (filled + size > buffer.length) {
      await writeBuffered()
      if (size > buffer.length) buffer = Buffer.allocUnsafe(Math.max(size, WRITE_BUFFER_BYTES))
    }
    example.writeTo(buffer, filled + PAYLOAD_OFFSET)
    const start = filled
    filled = frameRecord(buffer, filled, example.size)
    crc = extendCrc32cOverRecord(crc, buffer, start, filled)
    records.push({key: r.key, text: r.text, origin: r.origin})
    if (filled >= WRITE_CHUNK_BYTES) await writeBuffered()
  }
  const shard: ShardWriter = {
    split,
    get count() {
      return records.length
    },
    append: async (r) => {
      if (closed) throw new Error('ShardWriter.append: shard already closed')
      notWhileAppending('append')
      appending = true
      try {
        await appendOne(r)
      } finally {
        appending = false
      }
    },
    close: async () => {
      notWhileAppending('close')
      if (closed) throw new Error('ShardWriter.close: shard already closed')
      if (records.length === 0) throw new Error('writeShard: no records')
      closed = true
      try {
        await writeBuffered()
        await writing
        await (await writer).commit()
        await writeFileAtomic(joinPath(dir, keysFile), records.map((r) => r.key).join('\n') + '\n')
        // Where each example came from, so that a later duplicate can name the copy it duplicates
        // without reading the shard (JSON strings: an origin may hold any character).
        await writeFileAtomic(joinPath(dir, originsFileOf(keysFile)), records.map((r) => JSON.stringify(r.origin ?? '')).join('\n') + '\n')
        const info: ShardInfo = {file, split, count: records.length, bytes, crc32c: crc32cText(crc), keysFile, addedIn}
        target.published(info, records)
        return info
      } catch (error) {
        await shard.abort()
        throw error
      } finally {
        release()
      }
    },
    abort: async () => {
      if (!release()) return
      closed = true
      // The file is closed and removed only once no write is using it.
      await writing.catch(() => {})
      await (await writer.catch(() => undefined))?.abort()
      await remove(joinPath(dir, keysFile))
      await remove(joinPath(dir, originsFileOf(keysFile)))
    },
  }
  return shard
}
