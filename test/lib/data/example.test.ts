// Tests of the tf.train.Example codec: round trips, and a byte layout built by hand from TF's
// example.proto / feature.proto field numbers, which proves what Python's FromString will read.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {decodeExample, encodeExample, prepareExample} from '../../../src/lib/data/example.js'
import type {ImageRecord} from '../../../src/lib/data/types.js'
import {UserError} from '../../../src/lib/errors.js'

// Hand encoding, deliberately independent of protobufjs: tags are (field number << 3) | wire type,
// wire type 2 = length-delimited, followed by the length as a varint.
const TAG_1_LEN = 0x0a // field 1, length-delimited
const TAG_2_LEN = 0x12 // field 2, length-delimited
const TAG_3_LEN = 0x1a // field 3, length-delimited

function varint(n: number): number[] {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return out
}
const len = (tag: number, body: number[]) => [tag, ...varint(body.length), ...body]
const ascii = (s: string) => [...Buffer.from(s, 'utf8')]
// Feature.bytes_list = 1 { BytesList.value = 1 (repeated bytes) }
const bytesFeature = (value: number[]) => len(TAG_1_LEN, len(TAG_1_LEN, value))
// Feature.int64_list = 3 { Int64List.value = 1, packed: one length-delimited run of varints }
const int64Feature = (value: number) => len(TAG_3_LEN, len(TAG_1_LEN, varint(value)))
// Features.feature = 1: a map entry { key = 1 (string), value = 2 (Feature) }
const entry = (key: string, feature: number[]) => len(TAG_1_LEN, [...len(TAG_1_LEN, ascii(key)), ...len(TAG_2_LEN, feature)])
// Example.features = 1
const example = (entries: number[][]) => Uint8Array.from(len(TAG_1_LEN, entries.flat()))

const tiny: ImageRecord = {
  key: 'k1',
  label: 300,
  text: 'cat',
  encoded: Uint8Array.from([0x89, 0x50, 0x4e, 0x47]),
  height: 2,
  width: 3,
  channels: 1,
  origin: 'a/b.png',
}

// The tiny record, in the feature order encodeExample uses.
const tinyBytes = example([
  entry('image/encoded', bytesFeature([0x89, 0x50, 0x4e, 0x47])),
  entry('image/format', bytesFeature(ascii('png'))),
  entry('image/height', int64Feature(2)),
  entry('image/width', int64Feature(3)),
  entry('image/channels', int64Feature(1)),
  entry('image/class/label', int64Feature(300)),
  entry('image/class/text', bytesFeature(ascii('cat'))),
  entry('image/key/sha256', bytesFeature(ascii('k1'))),
  entry('image/source_id', bytesFeature(ascii('a/b.png'))),
])

describe('tf.train.Example', () => {
  it('hand encoding matches a literal layout for one feature', () => {
    // {"image/height": Feature{int64_list{value: [2]}}} inside Example.features.
    assert.deepEqual(
      Buffer.from(example([entry('image/height', int64Feature(2))])).toString('hex'),
      '0a17' + '0a15' + '0a0c' + Buffer.from('image/height').toString('hex') + '1205' + '1a03' + '0a0102',
    )
    assert.deepEqual(varint(300), [0xac, 0x02])
  })

  it('decodes a hand-built Example', () => {
    const r = decodeExample(tinyBytes)
    assert.equal(r.key, 'k1')
    assert.equal(r.label, 300)
    assert.equal(r.text, 'cat')
    assert.deepEqual([...r.encoded], [0x89, 0x50, 0x4e, 0x47])
    assert.deepEqual([r.height, r.width, r.channels], [2, 3, 1])
    assert.equal(r.origin, 'a/b.png')
  })

  it('encodes to exactly the hand-built bytes', () => {
    assert.equal(Buffer.from(encodeExample(tiny)).toString('hex'), Buffer.from(tinyBytes).toString('hex'))
  })

  it('encodes large fields (multi-byte lengths and values) to the hand-built layout', () => {
    const encoded = new Uint8Array(150_563)
    for (let i = 0; i < encoded.length; i++) encoded[i] = (i * 131) & 0xff
    const r: ImageRecord = {key: 'e'.repeat(64), label: 2 ** 32 - 1, text: 'chat noir ✓', encoded, height: 224, width: 16_384, channels: 3, origin: 'photos/ü.jpg'}
    const expected = example([
      entry('image/encoded', bytesFeature([...encoded])),
      entry('image/format', bytesFeature(ascii('png'))),
      entry('image/height', int64Feature(224)),
      entry('image/width', int64Feature(16_384)),
      entry('image/channels', int64Feature(3)),
      entry('image/class/label', int64Feature(2 ** 32 - 1)),
      entry('image/class/text', bytesFeature(ascii('chat noir ✓'))),
      entry('image/key/sha256', bytesFeature(ascii('e'.repeat(64)))),
      entry('image/source_id', bytesFeature(ascii('photos/ü.jpg'))),
    ])
    assert.ok(Buffer.from(encodeExample(r)).equals(Buffer.from(expected)))
    assert.throws(() => encodeExample({...r, label: -1}), /label must be an integer/)
  })

  it('writes an image given as deferred bytes exactly as the whole bytes, in the place it is given', () => {
    const whole = Uint8Array.from({length: 70_000}, (_, i) => (i * 13) & 0xff)
    const places: number[] = []
    const deferred = {
      byteLength: whole.length,
      writeTo(out: Uint8Array, offset: number) {
        places.push(offset)
        out.set(whole, offset)
      },
    }
    const example = prepareExample({...tiny, encoded: deferred})
    const out = new Uint8Array(example.size + 5).fill(0xee)
    example.writeTo(out, 3)
    assert.ok(Buffer.from(out.subarray(3, 3 + example.size)).equals(Buffer.from(encodeExample({...tiny, encoded: whole}))))
    assert.deepEqual([...out.subarray(0, 3), ...out.subarray(3 + example.size)], [0xee, 0xee, 0xee, 0xee, 0xee])
    assert.equal(places.length, 1)
    assert.ok(Buffer.from(out.subarray(places[0], places[0]! + whole.length)).equals(whole))
  })

  it('round-trips records, with and without origin, large labels and binary data', () => {
    const encoded = new Uint8Array(70_000)
    for (let i = 0; i < encoded.length; i++) encoded[i] = (i * 7919) & 0xff
    const records: ImageRecord[] = [
      tiny,
      {key: 'f'.repeat(64), label: 0, text: 'zéro ✓', encoded, height: 224, width: 224, channels: 3},
      {key: 'a'.repeat(64), label: 2 ** 31 - 1, text: '', encoded: new Uint8Array(0), height: 1, width: 1, channels: 1, origin: 'gs://b/x.png'},
    ]
    for (const r of records) {
      const back = decodeExample(encodeExample(r))
      assert.deepEqual({...back, encoded: [...back.encoded]}, {...r, encoded: [...r.encoded]})
    }
  })

  it('accepts a packed Int64List with several values and ignores unknown features', () => {
    const extra = example([
      entry('image/encoded', bytesFeature([1])),
      entry('image/height', len(TAG_3_LEN, len(TAG_1_LEN, [5, 9]))),
      entry('image/width', int64Feature(1)),
      entry('image/channels', int64Feature(1)),
      entry('image/class/label', int64Feature(4)),
      entry('image/class/text', bytesFeature(ascii('x'))),
      entry('image/key/sha256', bytesFeature(ascii('k'))),
      // A FloatList (Feature field 2) with packed float 1.0.
      entry('image/extra', len(TAG_2_LEN, len(TAG_1_LEN, [0, 0, 0x80, 0x3f]))),
    ])
    const r = decodeExample(extra)
    assert.equal(r.height, 5)
    assert.equal(r.label, 4)
    assert.equal(r.origin, undefined)
  })

  it('rejects garbage and missing features with a data error', () => {
    for (const bad of [Uint8Array.from([0x0a, 0x40, 1]), example([entry('image/height', int64Feature(2))])]) {
      assert.throws(
        () => decodeExample(bad, 'x.tfrecord record 3'),
        (error: unknown) => error instanceof UserError && error.code === 'EXAMPLE_INVALID' && error.exitCode === 3 && /x\.tfrecord record 3/.test(error.message),
      )
    }
  })
})
