// tf.train.Example encoding of one ImageRecord, readable by Python's tf.train.Example.FromString and
// tf.data pipelines. Messages are declared by reflection with the field numbers of TF's example.proto.
import protobuf from 'protobufjs'
import {UserError} from '../errors.js'
import type {Bytes, ImageRecord, RecordToWrite} from './types.js'

// Field numbers copied from tensorflow/core/example/{example,feature}.proto. The root is proto2 by
// default in protobufjs 8, so the packed encoding proto3 implies is requested explicitly.
const root = protobuf.Root.fromJSON({
  nested: {
    tensorflow: {
      nested: {
        BytesList: {fields: {value: {rule: 'repeated', type: 'bytes', id: 1}}},
        FloatList: {fields: {value: {rule: 'repeated', type: 'float', id: 1, options: {packed: true}}}},
        Int64List: {fields: {value: {rule: 'repeated', type: 'int64', id: 1, options: {packed: true}}}},
        Feature: {
          oneofs: {kind: {oneof: ['bytes_list', 'float_list', 'int64_list']}},
          fields: {
            bytes_list: {type: 'BytesList', id: 1},
            float_list: {type: 'FloatList', id: 2},
            int64_list: {type: 'Int64List', id: 3},
          },
        },
        Features: {fields: {feature: {keyType: 'string', type: 'Feature', id: 1} as protobuf.IMapField}},
        Example: {fields: {features: {type: 'Features', id: 1}}},
      },
    },
  },
})
const ExampleType = root.lookupType('tensorflow.Example')

type Int64 = number | {toNumber(): number}
interface FeatureMessage {
  bytes_list?: {value: Uint8Array[]}
  float_list?: {value: number[]}
  int64_list?: {value: Int64[]}
}
interface ExampleMessage {
  features?: {feature?: Record<string, FeatureMessage>}
}

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder('utf-8', {fatal: true})

/** Feature keys, shared with TF's image-classification conventions (TF-Slim / Object Detection API). */
export const FEATURE = {
  encoded: 'image/encoded',
  format: 'image/format',
  height: 'image/height',
  width: 'image/width',
  channels: 'image/channels',
  label: 'image/class/label',
  text: 'image/class/text',
  key: 'image/key/sha256',
  sourceId: 'image/source_id',
} as const

// The encoder is written out by hand (decoding stays with protobufjs): it writes an Example straight
// into the shard's write buffer, where protobufjs would build it in a buffer of its own that is then
// copied again for the TFRecord framing; for a 224x224 photo that was two 150 KB copies and
// allocations per image, and with the garbage collection they cause a large share of ingest's
// main-thread time. Tests check its bytes against protobufjs and against a layout built by hand from
// TF's field numbers. Tags are (field number << 3) | wire type 2 (length-delimited).
const TAG_1 = 0x0a
const TAG_2 = 0x12
const TAG_3 = 0x1a
const KEY_BYTES = new Map<string, Uint8Array>(Object.values(FEATURE).map((k) => [k, utf8.encode(k)]))
const PNG_TEXT = utf8.encode('png')

const varintSize = (n: number) => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5)
/** Bytes of a length-delimited field with an `n`-byte body: tag, length, body. */
const fieldSize = (n: number) => 1 + varintSize(n) + n

function writeVarint(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  out[pos++] = n
  return pos
}

function writeHeader(out: Uint8Array, pos: number, tag: number, length: number): number {
  out[pos] = tag
  return writeVarint(out, pos + 1, length)
}

interface Entry {
  key: Uint8Array
  /** The bytes of a bytes_list feature, or the one value of an int64_list. */
  value: Bytes | number
  /** Byte length of a bytes_list value (0 for an int64_list). */
  length: number
  /** Sizes of the Feature message and of the map entry message. */
  feature: number
  entry: number
}

function entryOf(name: string, bytesOrNumber: Bytes | number): Entry {
  if (typeof bytesOrNumber === 'number' && !(Number.isInteger(bytesOrNumber) && bytesOrNumber >= 0 && bytesOrNumber < 2 ** 32)) {
    throw new Error(`encodeExample: ${name} must be an integer in [0, 2^32), got ${bytesOrNumber}`)
  }
  const key = KEY_BYTES.get(name)!
  const length = typeof bytesOrNumber === 'number' ? 0 : bytesOrNumber.byteLength
  // Feature { bytes_list = 1 { value = 1: bytes } } or { int64_list = 3 { value = 1: packed varints } }
  const list = typeof bytesOrNumber === 'number' ? fieldSize(varintSize(bytesOrNumber)) : fieldSize(length)
  const feature = fieldSize(list)
  // Map entry { key = 1: string, value = 2: Feature }
  return {key, value: bytesOrNumber, length, feature, entry: fieldSize(key.length) + fieldSize(feature)}
}

/** The features of a record, in the fixed order that makes equal records give equal bytes. */
function entriesOf(r: RecordToWrite): Entry[] {
  const entries = [
    entryOf(FEATURE.encoded, r.encoded),
    entryOf(FEATURE.format, PNG_TEXT),
    entryOf(FEATURE.height, r.height),
    entryOf(FEATURE.width, r.width),
    entryOf(FEATURE.channels, r.channels),
    entryOf(FEATURE.label, r.label),
    entryOf(FEATURE.text, utf8.encode(r.text)),
    // The hex digest as text, as the Object Detection API stores image/key/sha256.
    entryOf(FEATURE.key, utf8.encode(r.key)),
  ]
  if (r.origin !== undefined) entries.push(entryOf(FEATURE.sourceId, utf8.encode(r.origin)))
  return entries
}

/** A record's tf.train.Example, sized but not yet written. */
export interface PreparedExample {
  /** Its size in bytes. */
  size: number
  /** Writes its bytes into `out` at `offset` (`size` bytes must fit there). */
  writeTo(out: Uint8Array, offset: number): void
}

/** Sizes a record's Example, so that it can be written in place into a larger buffer. */
export function prepareExample(r: RecordToWrite): PreparedExample {
  const entries = entriesOf(r)
  // Example { features = 1: Features { feature = 1: repeated map entry } }
  const features = entries.reduce((sum, e) => sum + fieldSize(e.entry), 0)
  return {
    size: fieldSize(features),
    writeTo(out, offset) {
      let pos = writeHeader(out, offset, TAG_1, features)
      for (const e of entries) {
        pos = writeHeader(out, pos, TAG_1, e.entry)
        pos = writeHeader(out, pos, TAG_1, e.key.length)
        out.set(e.key, pos)
        pos = writeHeader(out, pos + e.key.length, TAG_2, e.feature)
        if (typeof e.value === 'number') {
          pos = writeHeader(out, pos, TAG_3, fieldSize(varintSize(e.value)))
          pos = writeHeader(out, pos, TAG_1, varintSize(e.value))
          pos = writeVarint(out, pos, e.value)
        } else {
          pos = writeHeader(out, pos, TAG_1, fieldSize(e.length))
          pos = writeHeader(out, pos, TAG_1, e.length)
          if (e.value instanceof Uint8Array) out.set(e.value, pos)
          else e.value.writeTo(out, pos)
          pos += e.length
        }
      }
    },
  }
}

/** Serialises a record as a tf.train.Example. Feature order is fixed so equal records give equal bytes. */
export function encodeExample(r: RecordToWrite): Uint8Array {
  const example = prepareExample(r)
  const out = new Uint8Array(example.size)
  example.writeTo(out, 0)
  return out
}

function invalid(source: string, problem: string, cause?: unknown): UserError {
  return new UserError(`${source}: not a valid image tf.train.Example (${problem})`, {
    code: 'EXAMPLE_INVALID',
    exit: 'data',
    cause,
    details: {file: source},
  })
}

/** Parses a tf.train.Example written by encodeExample (or by TF with the same feature keys). */
export function decodeExample(buf: Uint8Array, source = 'example'): ImageRecord {
  let message: ExampleMessage
  try {
    message = ExampleType.decode(buf) as unknown as ExampleMessage
  } catch (error) {
    throw invalid(source, (error as Error).message, error)
  }
  const features = message.features?.feature ?? {}
  const bytesOf = (key: string, required: boolean): Uint8Array | undefined => {
    const value = features[key]?.bytes_list?.value[0]
    if (value === undefined && required) throw invalid(source, `missing bytes feature ${key}`)
    return value
  }
  const textOf = (key: string, required: boolean): string | undefined => {
    const value = bytesOf(key, required)
    if (value === undefined) return undefined
    try {
      return fromUtf8.decode(value)
    } catch (error) {
      throw invalid(source, `${key} is not UTF-8`, error)
    }
  }
  const intOf = (key: string): number => {
    const value = features[key]?.int64_list?.value[0]
    if (value === undefined) throw invalid(source, `missing int64 feature ${key}`)
    // protobufjs yields a Long when the `long` package is installed, a number otherwise.
    return typeof value === 'number' ? value : value.toNumber()
  }
  const format = textOf(FEATURE.format, false)
  if (format !== undefined && format !== 'png') throw invalid(source, `image/format is "${format}", expected "png"`)
  const record: ImageRecord = {
    key: textOf(FEATURE.key, true)!,
    label: intOf(FEATURE.label),
    text: textOf(FEATURE.text, true)!,
    encoded: bytesOf(FEATURE.encoded, true)!,
    height: intOf(FEATURE.height),
    width: intOf(FEATURE.width),
    channels: intOf(FEATURE.channels),
  }
  const origin = textOf(FEATURE.sourceId, false)
  if (origin !== undefined) record.origin = origin
  return record
}
