// What every protocol's routes share about HTTP itself: content types, allowed methods, URL segments
// and reading a request body within serve.maxBodyBytes.
import type {IncomingMessage} from 'node:http'
import {HttpError} from '../http-error.js'

export const JSON_TYPES = /^(application\/(json|[\w.+-]+\+json|x-www-form-urlencoded)|text\/(json|plain))$/i
export const IMAGE_TYPES = /^(image\/[\w.+-]+|application\/octet-stream)$/i

export function decodeSegment(segment: string | undefined): string | undefined {
  if (segment === undefined) return undefined
  try {
    return decodeURIComponent(segment)
  } catch {
    throw new HttpError(400, `malformed URL segment ${JSON.stringify(segment)}`)
  }
}

export function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim()
}

/** JSON endpoints also take curl -d's default form type and text/plain, as TF Serving does. */
export function requireJson(req: IncomingMessage): void {
  const type = mediaType(req)
  if (type !== '' && !JSON_TYPES.test(type)) throw new HttpError(415, `Content-Type ${type} is not accepted here; send application/json`)
}

/** A body of JSON and binary tensor data is octet-stream, though Triton (and so its clients) also lets it go as JSON or untyped. */
export function requireJsonOrBinary(req: IncomingMessage): void {
  const type = mediaType(req)
  if (type !== '' && !JSON_TYPES.test(type) && type.toLowerCase() !== 'application/octet-stream') {
    throw new HttpError(415, `Content-Type ${type} is not accepted here; send application/octet-stream (the JSON request followed by binary tensor data)`)
  }
}

export function allow(req: IncomingMessage, path: string, methods: readonly string[]): void {
  const method = req.method ?? 'GET'
  if (methods.includes(method) || (method === 'HEAD' && methods.includes('GET'))) return
  const allowed = methods.includes('GET') ? [...methods, 'HEAD'] : methods
  throw new HttpError(405, `${method} is not allowed on ${path}; use ${allowed.join(' or ')}`, {Allow: allowed.join(', ')})
}

export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > max) return Promise.reject(new HttpError(413, `the request body (${declared} bytes) is over serve.maxBodyBytes (${max})`, {Connection: 'close'}))
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > max) {
        req.off('data', onData)
        reject(new HttpError(413, `the request body is over serve.maxBodyBytes (${max} bytes)`, {Connection: 'close'}))
        return
      }
      chunks.push(chunk)
    }
    let ended = false
    req.on('data', onData)
    req.once('end', () => {
      ended = true
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size))
    })
    // A client that goes away mid-body ('aborted', ECONNRESET) is no server error: 499, nobody to answer.
    const aborted = () => {
      if (!ended) reject(new HttpError(499, 'the client closed the connection before sending the whole body'))
    }
    req.once('error', aborted)
    req.once('close', aborted)
  })
}
