// A Cloud Storage JSON API stand-in for tests: the requests @google-cloud/storage really sends (media,
// multipart and resumable uploads, ranged downloads, paged listings, delete, compose, rewrite) on 127.0.0.1.
import {crc32c} from '@node-rs/crc32'
import {createHash, randomUUID} from 'node:crypto'
import {EventEmitter} from 'node:events'
import http from 'node:http'
import type {AddressInfo} from 'node:net'

export interface StoredObject {
  bucket: string
  name: string
  data: Buffer
  generation: number
  metageneration: number
  contentType: string
  metadata: Record<string, string>
  created: string
  updated: string
}

/** One request as the stand-in saw it, for assertions on what the client sent. */
export interface SeenRequest {
  method: string
  /** Path without the /storage/v1 or /upload/storage/v1 prefix, object names decoded. */
  path: string
  query: Record<string, string>
  upload: boolean
  authorization: string | undefined
  status: number
  /** Set when the request was answered by an injected failure. */
  injected?: boolean
}

interface Session {
  bucket: string
  name: string
  contentType: string
  metadata: Record<string, string>
  preconditions: Record<string, string>
  chunks: Buffer[]
  received: number
}

interface Failure {
  /** An HTTP status to answer with, or 'lose-answer': serve the request, then drop the connection. */
  status: number | 'lose-answer'
  remaining: number
  match: (req: SeenRequest) => boolean
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason = 'invalid',
  ) {
    super(message)
  }
}

const b64 = (buf: Buffer) => buf.toString('base64')

function crc32cOf(data: Buffer): string {
  const out = Buffer.alloc(4)
  out.writeUInt32BE(crc32c(data) >>> 0)
  return b64(out)
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

/** Splits a multipart/related body into its parts (headers are not needed: metadata first, media second). */
function multipartParts(body: Buffer, contentType: string): Buffer[] {
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType)?.[1]
  if (!boundary) throw new HttpError(400, 'multipart upload without a boundary')
  const delimiter = Buffer.from(`--${boundary}`)
  const parts: Buffer[] = []
  let at = body.indexOf(delimiter)
  while (at !== -1) {
    const start = at + delimiter.length
    if (body.subarray(start, start + 2).toString() === '--') break
    const next = body.indexOf(delimiter, start)
    if (next === -1) break
    const part = body.subarray(start, next)
    const headerEnd = part.indexOf('\r\n\r\n')
    // Drop the CRLF after the delimiter line's headers and the one before the next delimiter.
    parts.push(part.subarray(headerEnd + 4, part.length - 2))
    at = next
  }
  return parts
}

export class GcsServer extends EventEmitter {
  readonly requests: SeenRequest[] = []
  private readonly buckets = new Map<string, Map<string, StoredObject>>()
  private readonly sessions = new Map<string, Session>()
  private readonly failures: Failure[] = []
  private generation = 1_700_000_000_000_000
  private server: http.Server | undefined
  /** http://127.0.0.1:<port>, once listening. */
  url = ''

  static async start(options: {buckets?: string[]} = {}): Promise<GcsServer> {
    const gcs = new GcsServer()
    for (const name of options.buckets ?? []) gcs.createBucket(name)
    await gcs.listen()
    return gcs
  }

  private async listen(): Promise<void> {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) this.sendError(res, 500, (error as Error).message, 'backendError')
        else res.destroy()
      })
    })
    // Keep-alive sockets would hold close() up; tests want a prompt shutdown.
    this.server.keepAliveTimeout = 1000
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  async close(): Promise<void> {
    if (!this.server) return
    const server = this.server
    this.server = undefined
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  createBucket(name: string): void {
    if (!this.buckets.has(name)) this.buckets.set(name, new Map())
  }

  /** Puts an object directly (test setup), as a new generation. */
  put(bucket: string, name: string, data: string | Uint8Array, contentType = 'application/octet-stream'): StoredObject {
    return this.store(this.bucket(bucket), bucket, name, Buffer.from(data), contentType, {})
  }

  get(bucket: string, name: string): StoredObject | undefined {
    return this.buckets.get(bucket)?.get(name)
  }

  /** Object names in `bucket`, sorted, optionally under a prefix. */
  names(bucket: string, prefix = ''): string[] {
    return [...(this.buckets.get(bucket)?.keys() ?? [])].filter((n) => n.startsWith(prefix)).sort()
  }

  /** Answers the next `count` requests (matching `match`, when given) with `status` instead of serving them. */
  failNext(count: number, status = 503, match: (req: SeenRequest) => boolean = () => true): void {
    this.failures.push({status, remaining: count, match})
  }

  clearFailures(): void {
    this.failures.length = 0
  }

  /**
   * Serves the next `count` matching requests but resets the connection instead of answering: the
   * change is made, the client never hears so (the case a retry must recognise as its own success).
   */
  loseAnswerNext(count: number, match: (req: SeenRequest) => boolean = () => true): void {
    this.failures.push({status: 'lose-answer', remaining: count, match})
  }

  /** Requests whose path starts with `prefix` (and optionally with this method). */
  seen(method?: string, pathPrefix = ''): SeenRequest[] {
    return this.requests.filter((r) => (method === undefined || r.method === method) && r.path.startsWith(pathPrefix))
  }

  private bucket(name: string): Map<string, StoredObject> {
    const bucket = this.buckets.get(name)
    if (!bucket) throw new HttpError(404, 'The specified bucket does not exist.', 'notFound')
    return bucket
  }

  private store(
    bucket: Map<string, StoredObject>,
    bucketName: string,
    name: string,
    data: Buffer,
    contentType: string,
    metadata: Record<string, string>,
  ): StoredObject {
    const now = new Date().toISOString()
    const previous = bucket.get(name)
    const object: StoredObject = {
      bucket: bucketName,
      name,
      data,
      generation: ++this.generation,
      metageneration: 1,
      contentType,
      metadata,
      created: now,
      updated: now,
    }
    bucket.set(name, object)
    this.emit('object', object, previous)
    return object
  }

  private resource(object: StoredObject): Record<string, unknown> {
    const generation = String(object.generation)
    return {
      kind: 'storage#object',
      id: `${object.bucket}/${object.name}/${generation}`,
      selfLink: `${this.url}/storage/v1/b/${object.bucket}/o/${encodeURIComponent(object.name)}`,
      name: object.name,
      bucket: object.bucket,
      generation,
      metageneration: String(object.metageneration),
      contentType: object.contentType,
      storageClass: 'STANDARD',
      size: String(object.data.length),
      md5Hash: b64(createHash('md5').update(object.data).digest()),
      crc32c: crc32cOf(object.data),
      etag: `C${generation}`,
      timeCreated: object.created,
      updated: object.updated,
      ...(Object.keys(object.metadata).length > 0 ? {metadata: object.metadata} : {}),
    }
  }

  /** Applies ifGenerationMatch (0 = must not exist), ifGenerationNotMatch, ifMetagenerationMatch/NotMatch. */
  private checkPreconditions(current: StoredObject | undefined, query: Record<string, string>): void {
    const fail = () => {
      throw new HttpError(412, 'At least one of the pre-conditions you specified did not hold.', 'conditionNotMet')
    }
    const generation = current?.generation ?? 0
    if (query.ifGenerationMatch !== undefined && Number(query.ifGenerationMatch) !== generation) fail()
    if (query.ifGenerationNotMatch !== undefined && Number(query.ifGenerationNotMatch) === generation) fail()
    if (query.ifMetagenerationMatch !== undefined && (!current || Number(query.ifMetagenerationMatch) !== current.metageneration)) fail()
    if (query.ifMetagenerationNotMatch !== undefined && current && Number(query.ifMetagenerationNotMatch) === current.metageneration) fail()
  }

  private sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body)
    res.writeHead(status, {'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text), ...headers})
    res.end(text)
  }

  private sendError(res: http.ServerResponse, status: number, message: string, reason: string): void {
    this.sendJson(res, status, {error: {code: status, message, errors: [{domain: 'global', reason, message}]}})
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    let rawPath = url.pathname
    let upload = false
    if (rawPath.startsWith('/upload/storage/v1/')) {
      upload = true
      rawPath = rawPath.slice('/upload/storage/v1'.length)
    } else if (rawPath.startsWith('/download/storage/v1/')) {
      rawPath = rawPath.slice('/download/storage/v1'.length)
    } else if (rawPath.startsWith('/storage/v1/')) {
      rawPath = rawPath.slice('/storage/v1'.length)
    }
    const query = Object.fromEntries(url.searchParams)
    const seen: SeenRequest = {
      method: req.method ?? 'GET',
      path: decodeURIComponent(rawPath),
      query,
      upload,
      authorization: req.headers.authorization,
      status: 0,
    }
    this.requests.push(seen)
    const body = await readBody(req)
    res.on('finish', () => {
      seen.status = res.statusCode
      this.emit('request', seen)
    })

    const failure = this.failures.find((f) => f.remaining > 0 && f.match(seen))
    if (failure?.status === 'lose-answer') {
      failure.remaining--
      seen.injected = true
      const socket = req.socket
      res.writeHead = (() => res) as typeof res.writeHead
      res.end = (() => {
        socket.destroy()
        return res
      }) as typeof res.end
    } else if (failure) {
      failure.remaining--
      seen.injected = true
      const headers: Record<string, string> = failure.status === 429 ? {'retry-after': '0'} : {}
      this.sendJson(res, failure.status, {error: {code: failure.status, message: `injected ${failure.status}`}}, headers)
      return
    }

    try {
      this.route(req, res, rawPath, query, body, upload)
    } catch (error) {
      if (error instanceof HttpError) this.sendError(res, error.status, error.message, error.reason)
      else throw error
    }
  }

  private route(req: http.IncomingMessage, res: http.ServerResponse, rawPath: string, query: Record<string, string>, body: Buffer, upload: boolean): void {
    const method = req.method ?? 'GET'
    const segments = rawPath.split('/').slice(1)
    // /b/<bucket>/o[/<object>[/compose | /rewriteTo/b/<bucket>/o/<object> | /copyTo/...]]
    if (segments[0] !== 'b' || segments.length < 3 || segments[2] !== 'o') throw new HttpError(404, `no route for ${method} ${rawPath}`, 'notFound')
    const bucketName = decodeURIComponent(segments[1]!)
    const objectName = segments[3] === undefined ? undefined : decodeURIComponent(segments[3])
    const rest = segments.slice(4)

    if (upload) {
      if (method === 'POST' && objectName === undefined) return this.insert(req, res, bucketName, query, body)
      if (method === 'PUT' && query.upload_id) return this.resumableChunk(req, res, query.upload_id, body)
      if (method === 'DELETE' && query.upload_id) {
        this.sessions.delete(query.upload_id)
        res.writeHead(499).end()
        return
      }
      throw new HttpError(404, `no upload route for ${method} ${rawPath}`, 'notFound')
    }

    const bucket = this.bucket(bucketName)
    if (objectName === undefined) {
      if (method === 'GET') return this.list(res, bucketName, bucket, query)
      throw new HttpError(405, `${method} not allowed on a bucket's objects`)
    }
    if (rest[0] === 'compose' && method === 'POST') return this.compose(res, bucketName, bucket, objectName, query, body)
    if ((rest[0] === 'rewriteTo' || rest[0] === 'copyTo') && method === 'POST') {
      const target = this.bucket(decodeURIComponent(rest[2]!))
      return this.copy(res, bucket, objectName, decodeURIComponent(rest[2]!), target, decodeURIComponent(rest[4]!), query, rest[0] === 'rewriteTo')
    }
    if (rest.length > 0) throw new HttpError(404, `no route for ${method} ${rawPath}`, 'notFound')

    const object = bucket.get(objectName)
    if (method === 'GET') {
      if (!object) throw new HttpError(404, `No such object: ${bucketName}/${objectName}`, 'notFound')
      this.checkPreconditions(object, query)
      if (query.alt === 'media') return this.media(req, res, object)
      return this.sendJson(res, 200, this.resource(object))
    }
    if (method === 'DELETE') {
      if (!object) throw new HttpError(404, `No such object: ${bucketName}/${objectName}`, 'notFound')
      this.checkPreconditions(object, query)
      bucket.delete(objectName)
      this.emit('delete', object)
      res.writeHead(204).end()
      return
    }
    if (method === 'PATCH' || method === 'PUT') {
      if (!object) throw new HttpError(404, `No such object: ${bucketName}/${objectName}`, 'notFound')
      this.checkPreconditions(object, query)
      const patch = body.length > 0 ? (JSON.parse(body.toString('utf8')) as {metadata?: Record<string, string>; contentType?: string}) : {}
      if (patch.metadata) object.metadata = {...object.metadata, ...patch.metadata}
      if (patch.contentType) object.contentType = patch.contentType
      object.metageneration++
      object.updated = new Date().toISOString()
      return this.sendJson(res, 200, this.resource(object))
    }
    throw new HttpError(405, `${method} not allowed on an object`)
  }

  private media(req: http.IncomingMessage, res: http.ServerResponse, object: StoredObject): void {
    const headers: Record<string, string> = {
      'content-type': object.contentType,
      'x-goog-generation': String(object.generation),
      'x-goog-metageneration': String(object.metageneration),
      'x-goog-stored-content-encoding': 'identity',
      'x-goog-stored-content-length': String(object.data.length),
    }
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '')
    if (range) {
      const size = object.data.length
      // bytes=-N is the last N bytes; bytes=N- is from N to the end.
      let start = range[1] === '' ? Math.max(0, size - Number(range[2])) : Number(range[1])
      let end = range[1] === '' || range[2] === '' ? size - 1 : Math.min(Number(range[2]), size - 1)
      if (start >= size && size > 0) {
        res.writeHead(416, {'content-range': `bytes */${size}`}).end()
        return
      }
      if (size === 0) start = end = 0
      const slice = object.data.subarray(start, end + 1)
      res.writeHead(206, {...headers, 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': String(slice.length)})
      res.end(slice)
      return
    }
    const hash = `crc32c=${crc32cOf(object.data)},md5=${b64(createHash('md5').update(object.data).digest())}`
    res.writeHead(200, {...headers, 'x-goog-hash': hash, 'content-length': String(object.data.length)})
    res.end(object.data)
  }

  private list(res: http.ServerResponse, bucketName: string, bucket: Map<string, StoredObject>, query: Record<string, string>): void {
    const prefix = query.prefix ?? ''
    const delimiter = query.delimiter
    const maxResults = Math.max(1, Math.min(Number(query.maxResults ?? 1000) || 1000, 1000))
    const after = query.pageToken ? Buffer.from(query.pageToken, 'base64url').toString('utf8') : undefined
    // One ordered sequence of entries (objects and, with a delimiter, collapsed prefixes), paged as GCS does.
    const entries: Array<{key: string; object?: StoredObject}> = []
    const prefixes = new Set<string>()
    for (const name of [...bucket.keys()].sort()) {
      if (!name.startsWith(prefix)) continue
      if (query.startOffset && name < query.startOffset) continue
      if (query.endOffset && name >= query.endOffset) continue
      if (delimiter) {
        const cut = name.indexOf(delimiter, prefix.length)
        if (cut !== -1) {
          const p = name.slice(0, cut + delimiter.length)
          if (!prefixes.has(p)) {
            prefixes.add(p)
            entries.push({key: p})
          }
          continue
        }
      }
      entries.push({key: name, object: bucket.get(name)!})
    }
    const remaining = after === undefined ? entries : entries.filter((e) => e.key > after)
    const page = remaining.slice(0, maxResults)
    const body: Record<string, unknown> = {kind: 'storage#objects'}
    const items = page.filter((e) => e.object).map((e) => this.resource(e.object!))
    const pagePrefixes = page.filter((e) => !e.object).map((e) => e.key)
    if (items.length > 0) body.items = items
    if (pagePrefixes.length > 0) body.prefixes = pagePrefixes
    if (remaining.length > maxResults) body.nextPageToken = Buffer.from(page.at(-1)!.key).toString('base64url')
    void bucketName
    this.sendJson(res, 200, body)
  }

  private insert(req: http.IncomingMessage, res: http.ServerResponse, bucketName: string, query: Record<string, string>, body: Buffer): void {
    const bucket = this.bucket(bucketName)
    const type = query.uploadType ?? 'media'
    if (type === 'resumable') {
      const meta = body.length > 0 ? (JSON.parse(body.toString('utf8')) as {name?: string; contentType?: string; metadata?: Record<string, string>}) : {}
      const name = query.name ?? meta.name
      if (!name) throw new HttpError(400, 'resumable upload without an object name', 'required')
      const preconditions = Object.fromEntries(Object.entries(query).filter(([k]) => k.startsWith('if')))
      // Checked when the session starts and again when it completes, as GCS does.
      this.checkPreconditions(bucket.get(name), preconditions)
      const id = randomUUID()
      this.sessions.set(id, {
        bucket: bucketName,
        name,
        contentType: meta.contentType ?? (req.headers['x-upload-content-type'] as string | undefined) ?? 'application/octet-stream',
        metadata: meta.metadata ?? {},
        preconditions,
        chunks: [],
        received: 0,
      })
      const location = `${this.url}/upload/storage/v1/b/${bucketName}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${id}`
      res.writeHead(200, {location, 'x-guploader-uploadid': id, 'content-length': '0'}).end()
      return
    }
    let name = query.name
    let data = body
    let contentType = (req.headers['content-type'] as string | undefined) ?? 'application/octet-stream'
    let metadata: Record<string, string> = {}
    if (type === 'multipart') {
      const [metaPart, media] = multipartParts(body, contentType)
      if (!metaPart || !media) throw new HttpError(400, 'multipart upload needs a metadata part and a media part')
      const meta = JSON.parse(metaPart.toString('utf8')) as {name?: string; contentType?: string; metadata?: Record<string, string>}
      name = name ?? meta.name
      contentType = meta.contentType ?? 'application/octet-stream'
      metadata = meta.metadata ?? {}
      data = media
    }
    if (!name) throw new HttpError(400, 'upload without an object name', 'required')
    this.checkPreconditions(bucket.get(name), query)
    this.sendJson(res, 200, this.resource(this.store(bucket, bucketName, name, Buffer.from(data), contentType, metadata)))
  }

  private resumableChunk(req: http.IncomingMessage, res: http.ServerResponse, id: string, body: Buffer): void {
    const session = this.sessions.get(id)
    if (!session) throw new HttpError(404, 'No such upload session', 'notFound')
    const range = req.headers['content-range'] ?? ''
    const persisted = () => (session.received > 0 ? {range: `bytes=0-${session.received - 1}`} : {})
    // `bytes */total` (or */*) asks how much was persisted.
    const status = /^bytes \*\/(\d+|\*)$/.exec(range)
    if (status) {
      const total = status[1] === '*' ? undefined : Number(status[1])
      if (total !== undefined && total === session.received) return this.complete(res, id, session)
      res.writeHead(308, {...persisted(), 'content-length': '0'}).end()
      return
    }
    const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(range)
    if (!match && range !== '') throw new HttpError(400, `bad Content-Range ${range}`)
    const start = match ? Number(match[1]) : 0
    const total = match && match[3] !== '*' ? Number(match[3]) : match ? undefined : body.length
    if (start > session.received) throw new HttpError(400, `chunk starts at ${start} but ${session.received} bytes were persisted`)
    // A resent chunk may overlap what is already persisted: keep only the new bytes.
    const fresh = body.subarray(session.received - start)
    session.chunks.push(Buffer.from(fresh))
    session.received += fresh.length
    if (total !== undefined && session.received >= total) return this.complete(res, id, session)
    res.writeHead(308, {...persisted(), 'content-length': '0'}).end()
  }

  private complete(res: http.ServerResponse, id: string, session: Session): void {
    const bucket = this.bucket(session.bucket)
    this.checkPreconditions(bucket.get(session.name), session.preconditions)
    this.sessions.delete(id)
    const object = this.store(bucket, session.bucket, session.name, Buffer.concat(session.chunks), session.contentType, session.metadata)
    this.sendJson(res, 200, this.resource(object))
  }

  private compose(res: http.ServerResponse, bucketName: string, bucket: Map<string, StoredObject>, name: string, query: Record<string, string>, body: Buffer): void {
    const request = JSON.parse(body.toString('utf8')) as {sourceObjects: Array<{name: string; generation?: string}>; destination?: {contentType?: string}}
    const parts = request.sourceObjects.map((source) => {
      const object = bucket.get(source.name)
      if (!object || (source.generation !== undefined && Number(source.generation) !== object.generation)) {
        throw new HttpError(404, `No such object: ${bucketName}/${source.name}`, 'notFound')
      }
      return object.data
    })
    this.checkPreconditions(bucket.get(name), query)
    const object = this.store(bucket, bucketName, name, Buffer.concat(parts), request.destination?.contentType ?? 'application/octet-stream', {})
    this.sendJson(res, 200, this.resource(object))
  }

  private copy(
    res: http.ServerResponse,
    source: Map<string, StoredObject>,
    sourceName: string,
    targetBucketName: string,
    target: Map<string, StoredObject>,
    targetName: string,
    query: Record<string, string>,
    rewrite: boolean,
  ): void {
    const object = source.get(sourceName)
    if (!object) throw new HttpError(404, `No such object: ${sourceName}`, 'notFound')
    this.checkPreconditions(target.get(targetName), query)
    const copied = this.store(target, targetBucketName, targetName, Buffer.from(object.data), object.contentType, {...object.metadata})
    const resource = this.resource(copied)
    if (!rewrite) return this.sendJson(res, 200, resource)
    this.sendJson(res, 200, {
      kind: 'storage#rewriteResponse',
      totalBytesRewritten: String(copied.data.length),
      objectSize: String(copied.data.length),
      done: true,
      resource,
    })
  }
}
