// Kafka wire-format primitives for the test broker: big-endian readers and writers, varints, and
// RecordBatch v2 (magic 2) framing with its CRC32C, enough to speak the protocol kafkajs uses.
import {crc32c} from '@node-rs/crc32'

/** Sequential reader over one request body; throws RangeError on a short read (a malformed frame). */
export class Reader {
  pos = 0
  constructor(readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new RangeError(`short read: ${n} bytes at ${this.pos} of ${this.buf.length}`)
  }

  remaining(): number {
    return this.buf.length - this.pos
  }

  int8(): number {
    this.need(1)
    return this.buf.readInt8(this.pos++)
  }

  bool(): boolean {
    return this.int8() !== 0
  }

  int16(): number {
    this.need(2)
    const v = this.buf.readInt16BE(this.pos)
    this.pos += 2
    return v
  }

  int32(): number {
    this.need(4)
    const v = this.buf.readInt32BE(this.pos)
    this.pos += 4
    return v
  }

  /** int64 as a JS number: offsets and timestamps here stay far below 2^53. */
  int64(): number {
    this.need(8)
    const v = this.buf.readBigInt64BE(this.pos)
    this.pos += 8
    return Number(v)
  }

  string(): string | null {
    const n = this.int16()
    if (n < 0) return null
    this.need(n)
    const s = this.buf.toString('utf8', this.pos, this.pos + n)
    this.pos += n
    return s
  }

  bytes(): Buffer | null {
    const n = this.int32()
    if (n < 0) return null
    this.need(n)
    const b = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return b
  }

  array<T>(item: (r: Reader) => T): T[] | null {
    const n = this.int32()
    if (n < 0) return null
    const out: T[] = []
    for (let i = 0; i < n; i++) out.push(item(this))
    return out
  }

  uvarint(): number {
    let result = 0
    let shift = 0
    for (;;) {
      this.need(1)
      const byte = this.buf[this.pos++]!
      result += (byte & 0x7f) * 2 ** shift
      if ((byte & 0x80) === 0) return result
      shift += 7
      if (shift > 35) throw new RangeError('varint too long')
    }
  }

  /** Zigzag-encoded signed varint (record fields). */
  varint(): number {
    const u = this.uvarint()
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2
  }

  varlong(): number {
    return this.varint()
  }

  compactString(): string | null {
    const n = this.uvarint() - 1
    if (n < 0) return null
    this.need(n)
    const s = this.buf.toString('utf8', this.pos, this.pos + n)
    this.pos += n
    return s
  }

  /** Skips a tagged-field section (flexible versions): we know no tags, so all are ignored. */
  taggedFields(): void {
    const count = this.uvarint()
    for (let i = 0; i < count; i++) {
      this.uvarint()
      const size = this.uvarint()
      this.need(size)
      this.pos += size
    }
  }

  /** A record's varint-length-prefixed bytes (-1 = null). */
  varBytes(): Buffer | null {
    const n = this.varint()
    if (n < 0) return null
    this.need(n)
    const b = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return b
  }
}

/** Appends big-endian fields into one growing buffer; large payloads are kept as separate chunks. */
export class Writer {
  private chunks: Buffer[] = []
  private cur = Buffer.allocUnsafe(256)
  private len = 0
  private total = 0

  private room(n: number): void {
    if (this.len + n <= this.cur.length) return
    const next = Buffer.allocUnsafe(Math.max(this.cur.length * 2, this.len + n))
    this.cur.copy(next, 0, 0, this.len)
    this.cur = next
  }

  private seal(): void {
    if (this.len === 0) return
    this.chunks.push(Buffer.from(this.cur.subarray(0, this.len)))
    this.len = 0
  }

  get size(): number {
    return this.total
  }

  int8(v: number): this {
    this.room(1)
    this.cur.writeInt8(v, this.len)
    this.len += 1
    this.total += 1
    return this
  }

  bool(v: boolean): this {
    return this.int8(v ? 1 : 0)
  }

  int16(v: number): this {
    this.room(2)
    this.cur.writeInt16BE(v, this.len)
    this.len += 2
    this.total += 2
    return this
  }

  int32(v: number): this {
    this.room(4)
    this.cur.writeInt32BE(v, this.len)
    this.len += 4
    this.total += 4
    return this
  }

  uint32(v: number): this {
    this.room(4)
    this.cur.writeUInt32BE(v >>> 0, this.len)
    this.len += 4
    this.total += 4
    return this
  }

  int64(v: number): this {
    this.room(8)
    this.cur.writeBigInt64BE(BigInt(v), this.len)
    this.len += 8
    this.total += 8
    return this
  }

  raw(buf: Buffer): this {
    if (buf.length <= 64) {
      this.room(buf.length)
      buf.copy(this.cur, this.len)
      this.len += buf.length
    } else {
      this.seal()
      this.chunks.push(buf)
    }
    this.total += buf.length
    return this
  }

  string(s: string | null): this {
    if (s === null) return this.int16(-1)
    const b = Buffer.from(s, 'utf8')
    return this.int16(b.length).raw(b)
  }

  bytes(b: Buffer | null): this {
    if (b === null) return this.int32(-1)
    return this.int32(b.length).raw(b)
  }

  array<T>(items: readonly T[] | null, item: (w: Writer, v: T, index: number) => void): this {
    if (items === null) return this.int32(-1)
    this.int32(items.length)
    items.forEach((v, i) => item(this, v, i))
    return this
  }

  uvarint(v: number): this {
    while (v >= 0x80) {
      this.int8(((v % 0x80) | 0x80) << 24 >> 24)
      v = Math.floor(v / 0x80)
    }
    return this.int8(v << 24 >> 24)
  }

  varint(v: number): this {
    return this.uvarint(v >= 0 ? v * 2 : -v * 2 - 1)
  }

  varBytes(b: Buffer | null): this {
    if (b === null) return this.varint(-1)
    return this.varint(b.length).raw(b)
  }

  compactString(s: string | null): this {
    if (s === null) return this.uvarint(0)
    const b = Buffer.from(s, 'utf8')
    return this.uvarint(b.length + 1).raw(b)
  }

  toBuffer(): Buffer {
    this.seal()
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.total)
  }
}

/** Byte offsets of the RecordBatch v2 header fields. */
export const BATCH = {
  baseOffset: 0,
  length: 8,
  leaderEpoch: 12,
  magic: 16,
  crc: 17,
  attributes: 21,
  lastOffsetDelta: 23,
  firstTimestamp: 27,
  maxTimestamp: 35,
  producerId: 43,
  producerEpoch: 51,
  baseSequence: 53,
  recordCount: 57,
  records: 61,
} as const

export interface BatchInfo {
  /** Bytes of the whole batch, header included. */
  size: number
  lastOffsetDelta: number
  maxTimestamp: number
  recordCount: number
  attributes: number
}

/**
 * Checks one RecordBatch at the start of `buf`: magic 2, a length that fits, and the CRC32C over
 * attributes..end. Returns what the log needs, or a reason for CORRUPT_MESSAGE.
 */
export function inspectBatch(buf: Buffer): BatchInfo | {error: string} {
  if (buf.length < BATCH.records) return {error: `batch header cut short (${buf.length} bytes)`}
  const length = buf.readInt32BE(BATCH.length)
  const size = 12 + length
  if (length < BATCH.records - 12 || size > buf.length) return {error: `batch length ${length} does not fit in ${buf.length} bytes`}
  const magic = buf.readInt8(BATCH.magic)
  if (magic !== 2) return {error: `magic ${magic}: only RecordBatch v2 is supported`}
  const expected = buf.readUInt32BE(BATCH.crc)
  const actual = crc32c(buf.subarray(BATCH.attributes, size)) >>> 0
  if (expected !== actual) return {error: `CRC32C mismatch: batch says ${expected.toString(16)}, content is ${actual.toString(16)}`}
  const lastOffsetDelta = buf.readInt32BE(BATCH.lastOffsetDelta)
  const recordCount = buf.readInt32BE(BATCH.recordCount)
  if (lastOffsetDelta < 0 || recordCount < 0) return {error: 'negative lastOffsetDelta or record count'}
  return {size, lastOffsetDelta, maxTimestamp: Number(buf.readBigInt64BE(BATCH.maxTimestamp)), recordCount, attributes: buf.readInt16BE(BATCH.attributes)}
}

export interface WireRecord {
  offset: number
  timestamp: number
  key: Buffer | null
  value: Buffer | null
  headers: Array<{key: string; value: Buffer | null}>
}

/** Decodes the records of an uncompressed batch (tests inspect the log with it). */
export function decodeBatchRecords(batch: Buffer): WireRecord[] {
  const attributes = batch.readInt16BE(BATCH.attributes)
  if ((attributes & 0x07) !== 0) throw new Error('decodeBatchRecords: compressed batches are not decoded here')
  const base = Number(batch.readBigInt64BE(BATCH.baseOffset))
  const firstTimestamp = Number(batch.readBigInt64BE(BATCH.firstTimestamp))
  const count = batch.readInt32BE(BATCH.recordCount)
  const r = new Reader(batch.subarray(BATCH.records, 12 + batch.readInt32BE(BATCH.length)))
  const out: WireRecord[] = []
  for (let i = 0; i < count; i++) {
    const size = r.varint()
    const end = r.pos + size
    r.int8()
    const timestampDelta = r.varlong()
    const offsetDelta = r.varint()
    const key = r.varBytes()
    const value = r.varBytes()
    const headerCount = r.varint()
    const headers: WireRecord['headers'] = []
    for (let h = 0; h < headerCount; h++) {
      const k = r.varBytes()
      headers.push({key: k === null ? '' : k.toString('utf8'), value: r.varBytes()})
    }
    r.pos = end
    out.push({offset: base + offsetDelta, timestamp: firstTimestamp + timestampDelta, key, value, headers})
  }
  return out
}

/** Encodes an uncompressed RecordBatch v2 with a correct CRC32C (for raw-protocol tests). */
export function encodeRecordBatch(records: Array<{key?: Buffer | null; value: Buffer | null; headers?: Record<string, Buffer>}>, timestamp = Date.now()): Buffer {
  const body = new Writer()
  body.int16(0).int32(records.length - 1).int64(timestamp).int64(timestamp).int64(-1).int16(-1).int32(-1).int32(records.length)
  records.forEach((rec, i) => {
    const w = new Writer()
    w.int8(0).varint(0).varint(i).varBytes(rec.key ?? null).varBytes(rec.value)
    const headers = Object.entries(rec.headers ?? {})
    w.varint(headers.length)
    for (const [k, v] of headers) w.varBytes(Buffer.from(k, 'utf8')).varBytes(v)
    const encoded = w.toBuffer()
    body.varint(encoded.length).raw(encoded)
  })
  const bodyBuf = body.toBuffer()
  const head = new Writer()
  head.int64(0).int32(bodyBuf.length + 9).int32(0).int8(2).uint32(crc32c(bodyBuf) >>> 0)
  return Buffer.concat([head.toBuffer(), bodyBuf])
}
