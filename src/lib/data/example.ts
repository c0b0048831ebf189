// tf.train.Example encoding of one ImageRecord, readable by Python's tf.train.Example.FromString and
// tf.data pipelines. Messages are declared by reflection with the field numbers of TF's example.proto.
import protobuf from 'protobufjs'
import {UserError} from '../ui/errors.js'
import type {ImageRecord} from './types.js'

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

const bytesFeature = (value: Uint8Array): FeatureMessage => ({bytes_list: {value: [value]}})
const textFeature = (value: string): FeatureMessage => bytesFeature(utf8.encode(value))
const intFeature = (value: number): FeatureMessage => ({int64_list: {value: [value]}})

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

/** Serialises a record as a tf.train.Example. Feature order is fixed so equal records give equal bytes. */
export function encodeExample(r: ImageRecord): Uint8Array {
  const feature: Record<string, FeatureMessage> = {
    [FEATURE.encoded]: bytesFeature(r.encoded),
    [FEATURE.format]: textFeature('png'),
    [FEATURE.height]: intFeature(r.height),
    [FEATURE.width]: intFeature(r.width),
    [FEATURE.channels]: intFeature(r.channels),
    [FEATURE.label]: intFeature(r.label),
    [FEATURE.text]: textFeature(r.text),
    // The hex digest as text, as the Object Detection API stores image/key/sha256.
    [FEATURE.key]: textFeature(r.key),
  }
  if (r.origin !== undefined) feature[FEATURE.sourceId] = textFeature(r.origin)
  return ExampleType.encode(ExampleType.fromObject({features: {feature}})).finish()
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
