// Tests of TFRecord framing: round trips, the CRC32C check value, and detection of every kind of
// damage (length, length CRC, payload, payload CRC, truncation) with the record named in the error.
import assert from 'node:assert/strict'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {describe, it} from 'node:test'
import {crc32c} from '@node-rs/crc32'
import {crc32cCombine, encodeRecord, extendCrc32cOverRecord, maskedCrc32c, readRecords, streamRecords, unmaskCrc32c} from '../../../src/lib/data/tfrecord.js'
import {UserError} from '../../../src/lib/errors.js'
import {seededRandom} from '../../support/random.js'

const rng = seededRandom

function payloads(): Buffer[] {
  const random = rng(7)
  const out: Buffer[] = [Buffer.alloc(0)]
  for (let i = 0; i < 200; i++) {
    const b = Buffer.alloc(Math.floor(random() * 300))
    for (let j = 0; j < b.length; j++) b[j] = Math.floor(random() * 256)
    out.push(b)
  }
  const big = Buffer.alloc(1 << 20)
  for (let j = 0; j < big.length; j++) big[j] = j * 31 + 7
  out.push(big, Buffer.alloc(0), Buffer.from('last'))
  return out
}

function expectCorrupt(fn: () => unknown, record: number): UserError {
  try {
    fn()
  } catch (error) {
    assert.ok(error instanceof UserError, `expected a UserError, got ${String(error)}`)
    assert.equal(error.code, 'TFRECORD_CORRUPT')
    assert.equal(error.exitCode, 3)
    assert.match(error.message, /shard\.tfrecord/)
    assert.match(error.message, new RegExp(`TFRecord ${record} \\(byte offset \\d+\\)`))
    assert.equal((error.details as {record: number}).record, record)
    return error
  }
  assert.fail('corruption was not detected')
}

describe('tfrecord', () => {
  it('computes the standard CRC32C check value', () => {
    assert.equal(crc32c(Buffer.from('123456789')) >>> 0, 0xe3069283)
  })

  it('masks the CRC like TensorFlow', () => {
    // Reference: crc32c("") = 0, so the masked value is the mask delta itself.
    assert.equal(maskedCrc32c(Buffer.alloc(0)), 0xa282ead8)
    const crc = 0xe3069283
    const expected = ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) % 2 ** 32
    assert.equal(maskedCrc32c(Buffer.from('123456789')), expected)
  })

  it('unmasks what it masked', () => {
    const random = rng(11)
    for (let i = 0; i < 1000; i++) {
      const b = Buffer.from([random() * 256, random() * 256, random() * 256, random() * 256, random() * 256])
      assert.equal(unmaskCrc32c(maskedCrc32c(b)), crc32c(b) >>> 0)
    }
  })

  it('combines the CRC32Cs of two parts into the CRC32C of both, for every part length', () => {
    const random = rng(12)
    const all = Buffer.alloc(300_000)
    for (let j = 0; j < all.length; j++) all[j] = Math.floor(random() * 256)
    for (const [start, split, end] of [[0, 0, 0], [0, 0, 9], [0, 9, 9], [3, 4, 5], [0, 100, 8291], [5, 8197, 16_389], [0, 1, 300_000], [7, 150_001, 300_000], [0, 299_999, 300_000]] as const) {
      const a = all.subarray(start, split)
      const b = all.subarray(split, end)
      const seed = 0x1234567
      assert.equal(crc32cCombine(crc32c(a, seed), crc32c(b), b.length), crc32c(all.subarray(start, end), seed) >>> 0, `${start}..${split}..${end}`)
    }
  })

  it('extends a running CRC32C over framed records, small and large, as one pass over the bytes would', () => {
    const records = payloads().map(encodeRecord)
    const file = Buffer.concat(records)
    let crc = 0
    let offset = 0
    for (const r of records) {
      crc = extendCrc32cOverRecord(crc, file, offset, offset + r.length)
      offset += r.length
    }
    assert.ok(records.some((r) => r.length > 64 << 10) && records.some((r) => r.length < 1024))
    assert.equal(crc, crc32c(file) >>> 0)
    // A damaged payload gives a record CRC that is not the bytes': the running CRC inherits it.
    const damaged = Buffer.from(file)
    const big = records.findIndex((r) => r.length > 64 << 10)
    const bigOffset = records.slice(0, big).reduce((n, r) => n + r.length, 0)
    damaged[bigOffset + 1000] ^= 1
    assert.notEqual(extendCrc32cOverRecord(0, damaged, bigOffset, bigOffset + records[big]!.length), crc32c(damaged.subarray(bigOffset, bigOffset + records[big]!.length)) >>> 0)
  })

  it('lays a record out as length, length CRC, data, data CRC', () => {
    const record = encodeRecord(Buffer.from('abc'))
    assert.equal(record.length, 3 + 16)
    assert.equal(record.readBigUInt64LE(0), 3n)
    assert.equal(record.readUInt32LE(8), maskedCrc32c(record.subarray(0, 8)))
    assert.equal(record.subarray(12, 15).toString(), 'abc')
    assert.equal(record.readUInt32LE(15), maskedCrc32c(Buffer.from('abc')))
  })

  it('round-trips many records, including empty and 1 MB ones', () => {
    const input = payloads()
    const file = Buffer.concat(input.map((p) => encodeRecord(p)))
    const output = [...readRecords(file, 'shard.tfrecord')]
    assert.equal(output.length, input.length)
    for (let i = 0; i < input.length; i++) assert.ok(output[i]!.equals(input[i]!), `record ${i} differs`)
  })

  it('streams a file in small chunks with the same result', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-tfrecord-'))
    try {
      const input = payloads()
      const file = path.join(dir, 'shard.tfrecord')
      await writeFile(file, Buffer.concat(input.map((p) => encodeRecord(p))))
      for (const chunk of [13, 4096, 4 << 20]) {
        const output: Buffer[] = []
        for await (const p of streamRecords(file, chunk)) output.push(p)
        assert.equal(output.length, input.length)
        for (let i = 0; i < input.length; i++) assert.ok(output[i]!.equals(input[i]!), `chunk ${chunk}: record ${i} differs`)
      }
      const empty = path.join(dir, 'empty.tfrecord')
      await writeFile(empty, Buffer.alloc(0))
      for await (const _ of streamRecords(empty)) assert.fail('an empty file has no records')
    } finally {
      await rm(dir, {recursive: true, force: true})
    }
  })

  describe('detects a flipped byte and names the record', () => {
    const records = [Buffer.from('first record'), Buffer.from('second record'), Buffer.from('third')]
    const file = Buffer.concat(records.map((r) => encodeRecord(r)))
    const second = records[0]!.length + 16
    const cases: Array<[string, number]> = [
      ['in the length', second + 0],
      ['in the high bytes of the length', second + 7],
      ['in the length CRC', second + 9],
      ['in the payload', second + 12 + 3],
      ['in the payload CRC', second + 12 + records[1]!.length + 2],
    ]
    for (const [where, offset] of cases) {
      it(where, () => {
        const damaged = Buffer.from(file)
        damaged[offset]! ^= 0x10
        const error = expectCorrupt(() => [...readRecords(damaged, 'shard.tfrecord')], 1)
        assert.equal((error.details as {offset: number}).offset, second)
      })
    }
  })

  it('detects a truncated file, in the header or in the payload', async () => {
    const file = Buffer.concat([encodeRecord(Buffer.from('one')), encodeRecord(Buffer.from('two two two'))])
    for (const cut of [1, 5, 12, 20]) {
      const truncated = file.subarray(0, file.length - cut)
      const error = expectCorrupt(() => [...readRecords(truncated, 'shard.tfrecord')], 1)
      assert.match(error.message, /truncated/)
    }
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-tfrecord-'))
    try {
      const f = path.join(dir, 'shard.tfrecord')
      await writeFile(f, file.subarray(0, file.length - 5))
      await assert.rejects(
        async () => {
          for await (const _ of streamRecords(f, 8)) {
            // Drain.
          }
        },
        (error: unknown) => error instanceof UserError && error.code === 'TFRECORD_CORRUPT' && /TFRecord 1 .*truncated/.test(error.message),
      )
    } finally {
      await rm(dir, {recursive: true, force: true})
    }
  })
})
