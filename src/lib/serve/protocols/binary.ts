// Triton's binary tensor data extension of KServe V2 HTTP: a body is the JSON inference request or
// response followed by raw tensor bytes (little-endian, row-major; a BYTES element is a 4-byte
// length and its bytes), and the Inference-Header-Content-Length header says where the JSON ends.
import os from 'node:os'
import type {Reply} from '../context.js'
import {takeFloats} from '../floats.js'
import {badRequest, type HttpError} from '../http-error.js'
import {isObject, parseJson} from '../inputs.js'

export const INFERENCE_HEADER = 'Inference-Header-Content-Length'

/**
 * The JSON request, and the binary data after it when the client sent the header (possibly empty:
 * a client may announce the split and then send only JSON).
 */
export function parseRequest(body: Buffer, header: string | undefined, maxDepth: number): {request: unknown; binary?: Buffer} {
  if (header === undefined) return {request: parseJson(body, maxDepth)}
  // Digits only: Number() would also take "0x10", "1e3" or " ", which no client means.
  if (!/^\d+$/.test(header)) throw badRequest(`${INFERENCE_HEADER} must be a non-negative integer (the JSON's length in bytes), got ${JSON.stringify(header)}`)
  const length = Number(header)
  if (length > body.length) throw badRequest(`${INFERENCE_HEADER} ${header} is larger than the ${body.length}-byte request body`)
  if (length === 0) throw badRequest(`${INFERENCE_HEADER} is 0, but the body must start with the JSON inference request`)
  try {
    return {request: parseJson(body.subarray(0, length), maxDepth), binary: body.subarray(length)}
  } catch (error) {
    throw badRequest(`the first ${length} bytes of the body (${INFERENCE_HEADER}): ${(error as HttpError).message}`)
  }
}

function inputLabel(input: Record<string, unknown>, i: number): string {
  return typeof input.name === 'string' ? `input ${JSON.stringify(input.name)}` : `inputs[${i}]`
}

/**
 * Each input's slice of the binary data, in input order (undefined for an input that carries JSON
 * "data"); the declared sizes must use up the binary data exactly, as Triton requires.
 */
export function binaryInputs(inputs: unknown[], binary: Buffer | undefined): Array<Buffer | undefined> {
  let offset = 0
  const chunks = inputs.map((input, i) => {
    if (!isObject(input) || input.parameters === undefined) return undefined
    if (!isObject(input.parameters)) throw badRequest(`inputs[${i}].parameters must be an object`)
    const size = input.parameters.binary_data_size
    if (size === undefined) return undefined
    const label = inputLabel(input, i)
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw badRequest(`${label}: parameters.binary_data_size must be a non-negative integer, got ${JSON.stringify(size)}`)
    if (input.data !== undefined) throw badRequest(`${label} has both "data" and parameters.binary_data_size; send its tensor either as JSON or as binary data`)
    if (binary === undefined) throw badRequest(`${label} has parameters.binary_data_size, but the request has no ${INFERENCE_HEADER} header saying where the JSON ends`)
    if (offset + size > binary.length) {
      throw badRequest(`${label}: binary_data_size ${size} goes past the end of the body; ${binary.length - offset} bytes of binary data are left for it`)
    }
    const chunk = binary.subarray(offset, offset + size)
    offset += size
    return chunk
  })
  if (binary !== undefined && offset !== binary.length) {
    throw badRequest(`the inputs' binary_data_size add up to ${offset} bytes, but ${binary.length} bytes of binary data follow the JSON`)
  }
  return chunks
}

/** The tensor bytes are little-endian, as on every host Node runs on in practice: then a copy suffices. */
const LITTLE_ENDIAN_HOST = os.endianness() === 'LE'
/** An FP32 whose exponent bits are all set is NaN or +-Infinity. */
const EXPONENT_BITS = 0x7f800000

/**
 * Little-endian FP32 values; NaN and Infinity are the client's mistake (400 naming `where`). On a
 * little-endian host the bytes are copied whole and checked as integers (a client batch of 64 MNIST
 * images is 50,176 values: 0.13-0.15 ms so, 0.19-0.21 ms converting them one by one).
 */
export function readFloats(bytes: Buffer, where: string): Float32Array {
  const out = takeFloats(bytes.length / 4)
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(out.buffer).set(bytes)
    const bits = new Uint32Array(out.buffer)
    for (let i = 0; i < bits.length; i++) {
      if ((bits[i]! & EXPONENT_BITS) === EXPONENT_BITS) throw notFinite(where, i, out[i]!)
    }
    return out
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  for (let i = 0; i < out.length; i++) {
    const value = view.getFloat32(i * 4, true)
    if (!Number.isFinite(value)) throw notFinite(where, i, value)
    out[i] = value
  }
  return out
}

function notFinite(where: string, index: number, value: number): HttpError {
  return badRequest(`${where}: element ${index} is ${value}; NaN and Infinity are not accepted`)
}

export function floatBytes(values: Float32Array): Buffer {
  if (LITTLE_ENDIAN_HOST) return Buffer.from(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
  const out = Buffer.allocUnsafe(values.length * 4)
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true)
  return out
}

/** BYTES elements; the last one must end exactly where the data ends. */
export function readElements(bytes: Buffer, where: string): Buffer[] {
  const elements: Buffer[] = []
  let offset = 0
  while (offset < bytes.length) {
    if (bytes.length - offset < 4) throw badRequest(`${where}: ${bytes.length - offset} bytes after ${elements.length} BYTES elements, too few for the 4-byte length of another`)
    const length = bytes.readUInt32LE(offset)
    offset += 4
    if (length > bytes.length - offset) throw badRequest(`${where}: BYTES element ${elements.length} declares ${length} bytes, only ${bytes.length - offset} remain`)
    elements.push(bytes.subarray(offset, offset + length))
    offset += length
  }
  return elements
}

export function elementBytes(values: string[]): Buffer {
  const encoded = values.map((value) => Buffer.from(value, 'utf8'))
  const out = Buffer.allocUnsafe(encoded.reduce((sum, b) => sum + 4 + b.length, 0))
  let offset = 0
  for (const b of encoded) {
    offset = out.writeUInt32LE(b.length, offset)
    offset += b.copy(out, offset)
  }
  return out
}

/** The JSON response followed by the binary outputs' bytes, in output order. */
export function binaryReply(response: unknown, chunks: Buffer[]): Reply {
  const head = Buffer.from(JSON.stringify(response), 'utf8')
  return {
    status: 200,
    body: Buffer.concat([head, ...chunks]),
    contentType: 'application/octet-stream',
    headers: {[INFERENCE_HEADER]: String(head.length)},
  }
}
