// TFRecord framing, byte-compatible with TensorFlow's tf.data.TFRecordDataset / tf.io.TFRecordWriter:
// each record is a uint64 LE length, the masked CRC32C of those 8 bytes, the payload, its masked CRC32C.
import {open} from 'node:fs/promises'
import {crc32c} from '@node-rs/crc32'
import {UserError} from '../errors.js'

const MASK_DELTA = 0xa282ead8
/** Bytes of framing around each payload: 8 length + 4 length CRC + 4 payload CRC. */
export const RECORD_OVERHEAD = 16
const HEADER_BYTES = 12
/** Where the payload starts within a record. */
export const PAYLOAD_OFFSET = HEADER_BYTES

/**
 * The CRC TFRecord stores: CRC32C rotated and offset, because a CRC over data that itself embeds
 * CRCs is weak (this is the same mask as leveldb / TensorFlow's crc32c::Mask).
 */
export function maskedCrc32c(buf: Uint8Array): number {
  const crc = crc32c(buf) >>> 0
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + MASK_DELTA) >>> 0
}

/** The CRC32C that `masked` (as maskedCrc32c returns it) was made from. */
export function unmaskCrc32c(masked: number): number {
  const rotated = (masked - MASK_DELTA) >>> 0
  return ((rotated << 15) | (rotated >>> 17)) >>> 0
}

// CRC-32C polynomial, bit-reversed (Castagnoli), and the products that combine CRCs, as in zlib's
// crc32_combine (crc32.c): a CRC is a polynomial mod P, so appending n bytes multiplies the first
// part's CRC by x^(8n) mod P. Written here because @node-rs/crc32 has no combine.
const CRC32C_POLY = 0x82f63b78

/** a * b mod P, for bit-reversed polynomials (bit 31 is x^0). */
function multModP(a: number, b: number): number {
  let product = 0
  for (let m = 0x80000000; m !== 0; m >>>= 1) {
    if (a & m) {
      product ^= b
      if ((a & (m - 1)) === 0) break
    }
    b = b & 1 ? (b >>> 1) ^ CRC32C_POLY : b >>> 1
  }
  return product >>> 0
}

/** x^(2^k) mod P for k = 0..31. */
const X2N: number[] = [0x40000000]
for (let k = 1; k < 32; k++) X2N.push(multModP(X2N[k - 1]!, X2N[k - 1]!))

/** The CRC-32C of A followed by B, from crcA, crcB and B's length: no pass over the bytes. */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  // x^(8 * lengthB) mod P, from the bits of lengthB (k starts at 3 for the factor 8).
  let shift = 0x80000000
  for (let n = lengthB, k = 3; n > 0; n = Math.floor(n / 2), k++) if (n % 2 === 1) shift = multModP(X2N[k & 31]!, shift)
  return (multModP(shift, crcA >>> 0) ^ crcB) >>> 0
}

/** Below this payload size a second pass costs less than combining (two more calls, ~1 us in all). */
const COMBINE_FROM_BYTES = 8 << 10

/**
 * Extends `crc`, a running CRC-32C over the bytes before out[offset], over the record framed
 * there by frameRecord (which ends at `end`), reusing the payload CRC the record carries instead of
 * a second pass over its payload.
 */
export function extendCrc32cOverRecord(crc: number, out: Buffer, offset: number, end: number): number {
  const payload = end - offset - RECORD_OVERHEAD
  if (payload < COMBINE_FROM_BYTES) return crc32c(out.subarray(offset, end), crc)
  crc = crc32c(out.subarray(offset, offset + PAYLOAD_OFFSET), crc)
  crc = crc32cCombine(crc, unmaskCrc32c(out.readUInt32LE(end - 4)), payload)
  return crc32c(out.subarray(end - 4, end), crc)
}

/** Frames one payload as a TFRecord. */
export function encodeRecord(data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(data.length + RECORD_OVERHEAD)
  out.set(data, PAYLOAD_OFFSET)
  frameRecord(out, 0, data.length)
  return out
}

/**
 * Frames a payload already written at `out[offset + PAYLOAD_OFFSET ..]`, in place: the length and
 * its CRC before it, the payload CRC after. Returns the offset just past the record.
 */
export function frameRecord(out: Buffer, offset: number, length: number): number {
  out.writeUInt32LE(length % 2 ** 32, offset)
  out.writeUInt32LE(Math.floor(length / 2 ** 32), offset + 4)
  out.writeUInt32LE(maskedCrc32c(out.subarray(offset, offset + 8)), offset + 8)
  const start = offset + PAYLOAD_OFFSET
  out.writeUInt32LE(maskedCrc32c(out.subarray(start, start + length)), start + length)
  return start + length + 4
}

function corrupt(source: string, index: number, offset: number, problem: string): UserError {
  return new UserError(`${source}: TFRecord ${index} (byte offset ${offset}) ${problem}`, {
    code: 'TFRECORD_CORRUPT',
    exit: 'data',
    details: {file: source, record: index, offset},
    suggestions: ['The file is damaged or was not fully written: restore it, or re-create the dataset with `ml ingest`.'],
  })
}

/**
 * Checks a record header at `pos` (which must hold at least 12 bytes) and returns the payload
 * length. The length CRC is verified before the length is trusted, so a flipped length bit reads as
 * corruption rather than as a bogus huge allocation.
 */
function parseHeader(buf: Buffer, pos: number, source: string, index: number, offset: number): number {
  const lengthBytes = buf.subarray(pos, pos + 8)
  if (buf.readUInt32LE(pos + 8) !== maskedCrc32c(lengthBytes)) throw corrupt(source, index, offset, 'has a bad length CRC')
  const length = buf.readBigUInt64LE(pos)
  if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(source, index, offset, `has an impossible length ${length}`)
  return Number(length)
}

function checkPayload(buf: Buffer, start: number, length: number, source: string, index: number, offset: number): Buffer {
  const data = buf.subarray(start, start + length)
  if (buf.readUInt32LE(start + length) !== maskedCrc32c(data)) throw corrupt(source, index, offset, 'has a bad data CRC')
  return data
}

/**
 * Yields the payloads of a whole TFRecord file held in memory (views into `buf`, not copies).
 * `source` names the file in errors.
 */
export function* readRecords(buf: Buffer, source: string): Generator<Buffer> {
  let pos = 0
  for (let index = 0; pos < buf.length; index++) {
    if (buf.length - pos < HEADER_BYTES) throw corrupt(source, index, pos, `is truncated (${buf.length - pos} bytes of a 12-byte header)`)
    const length = parseHeader(buf, pos, source, index, pos)
    const end = pos + HEADER_BYTES + length + 4
    if (end > buf.length) throw corrupt(source, index, pos, `is truncated (needs ${end - pos} bytes, file has ${buf.length - pos} left)`)
    yield checkPayload(buf, pos + HEADER_BYTES, length, source, index, pos)
    pos = end
  }
}

/**
 * Streams the payloads of a TFRecord file without loading it whole: reads `chunkSize` bytes at a
 * time (more for a record bigger than that). Yielded buffers stay valid after the next one.
 */
export async function* streamRecords(file: string, chunkSize = 4 << 20): AsyncGenerator<Buffer> {
  const handle = await open(file, 'r')
  try {
    // `buf[pos..]` holds unparsed bytes that start at file offset `offset`.
    let buf = Buffer.alloc(0)
    let pos = 0
    let offset = 0
    let eof = false
    // Each refill copies the unparsed tail into a fresh buffer (never reused), so payload views
    // already handed out are never overwritten.
    const fill = async (need: number): Promise<boolean> => {
      while (buf.length - pos < need && !eof) {
        const tail = buf.length - pos
        const next = Buffer.allocUnsafe(Math.max(chunkSize, need))
        buf.copy(next, 0, pos)
        const {bytesRead} = await handle.read(next, tail, next.length - tail, offset + tail)
        if (bytesRead < next.length - tail) eof = true
        buf = next.subarray(0, tail + bytesRead)
        pos = 0
      }
      return buf.length - pos >= need
    }
    for (let index = 0; ; index++) {
      if (!(await fill(HEADER_BYTES))) {
        if (buf.length - pos === 0) return
        throw corrupt(file, index, offset, `is truncated (${buf.length - pos} bytes of a 12-byte header)`)
      }
      const length = parseHeader(buf, pos, file, index, offset)
      const total = HEADER_BYTES + length + 4
      if (!(await fill(total))) throw corrupt(file, index, offset, `is truncated (needs ${total} bytes, file has ${buf.length - pos} left)`)
      const data = checkPayload(buf, pos + HEADER_BYTES, length, file, index, offset)
      pos += total
      offset += total
      yield data
    }
  } finally {
    await handle.close()
  }
}
