// The S3 backend of the storage layer: s3://bucket/key paths on the AWS SDK for JavaScript v3
// (@aws-sdk/client-s3, multipart uploads through @aws-sdk/lib-storage), with retries on throttling
// and 5xx, create-only (If-None-Match: *) and ETag-matched (If-Match) writes, and clear auth errors.
// S3-compatible stores (MinIO, Cloudflare R2, moto) are reached through ML_S3_ENDPOINT.
import {createHash} from 'node:crypto'
import {createReadStream, createWriteStream} from 'node:fs'
import {readFile, stat} from 'node:fs/promises'
import type {Readable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import type {S3Client} from '@aws-sdk/client-s3'
import {awsSettingsFromEnv, clientOptions, credentialCheck, isAuthError, AWS_AUTH_HELP, statusOf, awsAuthError, type AwsSettings} from '../cloud/aws.js'
import {UserError} from '../errors.js'
import {contentTypeOf, inParallel, storageError, type WrittenContent} from './object-store.js'

/** Uploads above this are multipart, in parts of this size (S3's minimum part is 5 MiB). */
export const PART_SIZE = 8 * 1024 * 1024
/** Parts uploaded at once by one multipart upload. */
const PART_CONCURRENCY = 4
/** Parallel requests for bulk copies (a "directory" is many objects). */
const BULK_CONCURRENCY = 8

let overrides: Partial<AwsSettings> | undefined
let client: Promise<{s3: S3Client; check: () => Promise<void>}> | undefined

/** Replaces the environment's settings (tests point the backend at the emulator); resets the client. */
export function configureS3(settings: Partial<AwsSettings> | undefined): void {
  overrides = settings
  client = undefined
}

function settings(): AwsSettings {
  return {...awsSettingsFromEnv('s3'), ...overrides}
}

async function s3(): Promise<S3Client> {
  client ??= (async () => {
    // Loaded on first use: runs without s3:// paths never pay for the client library.
    const {S3Client} = await import('@aws-sdk/client-s3')
    const s = settings()
    const created = new S3Client({...clientOptions(s), forcePathStyle: s.forcePathStyle, followRegionRedirects: true})
    return {s3: created, check: credentialCheck('S3', created)}
  })()
  const {s3: c, check} = await client
  await check()
  return c
}

export interface S3Location {
  bucket: string
  /** The object key (or prefix), without a leading slash; empty for the bucket root. */
  key: string
}

export function parseS3Uri(uri: string): S3Location {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri)
  if (!match || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(match[1]!)) {
    throw new UserError(`${uri} is not a valid s3:// URI (s3://<bucket>/<path>)`, {code: 'STORAGE_URI', exit: 'usage'})
  }
  return {bucket: match[1]!, key: match[2]!.replace(/\/+$/, '')}
}

export const s3Uri = (bucket: string, key: string) => `s3://${bucket}/${key}`

function objectOf(uri: string): S3Location {
  const location = parseS3Uri(uri)
  if (!location.key) throw new UserError(`${uri} names a bucket, not an object`, {code: 'STORAGE_URI', exit: 'usage'})
  return location
}

/**
 * Turns an SDK error into what the storage layer promises: ENOENT for a missing object, EEXIST /
 * ECONFLICT for failed preconditions, and UserErrors (exit 5) for auth and service failures.
 */
function translate(error: unknown, action: string, uri: string, precondition?: 'create' | 'match'): Error {
  if (error instanceof UserError) return error
  const status = statusOf(error)
  const name = (error as {name?: string} | undefined)?.name ?? ''
  const message = (error as Error | undefined)?.message ?? String(error)
  if (name === 'NoSuchBucket') {
    return new UserError(`cannot ${action} ${uri}: bucket ${parseS3Uri(uri).bucket} does not exist`, {
      code: 'S3_BUCKET_NOT_FOUND',
      exit: 'usage',
      cause: error,
      suggestions: ['Check the bucket name (and ML_S3_ENDPOINT for an S3-compatible store), or create it: `aws s3 mb s3://<bucket>`.'],
    })
  }
  if (status === 404 || name === 'NoSuchKey' || name === 'NotFound') return storageError('ENOENT', `${uri}: no such object`, error)
  // 409 ConditionalRequestConflict: another conditional write to the key was in progress.
  if (status === 412 || status === 409 || name === 'PreconditionFailed') {
    return precondition === 'create' ? storageError('EEXIST', `${uri} already exists`, error) : storageError('ECONFLICT', `${uri} was changed by another writer`, error)
  }
  if (isAuthError(error)) return awsAuthError('S3', error)
  if (status === 403 || name === 'AccessDenied') {
    return new UserError(`permission denied to ${action} ${uri}: ${message}`, {
      code: 'S3_FORBIDDEN',
      exit: 'service',
      cause: error,
      suggestions: ['Allow the identity in use s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket, or use other credentials.', AWS_AUTH_HELP[0]!],
    })
  }
  return new UserError(`S3 failed to ${action} ${uri}: ${message}`, {
    code: 'S3_UNAVAILABLE',
    exit: 'service',
    cause: error,
    suggestions: ['Retried with backoff already; check connectivity (and ML_S3_ENDPOINT when set) and https://health.aws.amazon.com, then run the command again.'],
  })
}

async function call<T>(action: string, uri: string, work: (c: S3Client) => Promise<T>, precondition?: 'create' | 'match'): Promise<T> {
  const c = await s3()
  try {
    return await work(c)
  } catch (error) {
    throw translate(error, action, uri, precondition)
  }
}

const commands = () => import('@aws-sdk/client-s3')

export interface S3ObjectInfo {
  size: number
  /** The ETag, quotes included: the revision If-Match compares. */
  etag: string
}

/** Size and ETag of an object, or undefined when it does not exist. */
export async function s3Stat(uri: string): Promise<S3ObjectInfo | undefined> {
  const {bucket, key} = objectOf(uri)
  const {HeadObjectCommand} = await commands()
  try {
    const head = await call('read', uri, (c) => c.send(new HeadObjectCommand({Bucket: bucket, Key: key})))
    return {size: head.ContentLength ?? 0, etag: head.ETag ?? ''}
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

async function getObject(uri: string): Promise<{body: Readable; etag: string}> {
  const {bucket, key} = objectOf(uri)
  const {GetObjectCommand} = await commands()
  const response = await call('read', uri, (c) => c.send(new GetObjectCommand({Bucket: bucket, Key: key})))
  const body = response.Body as Readable | undefined
  if (!body) throw translate(new Error('no body in the answer'), 'read', uri)
  return {body, etag: response.ETag ?? ''}
}

async function drain(body: Readable, uri: string): Promise<Buffer> {
  const chunks: Buffer[] = []
  try {
    for await (const chunk of body) chunks.push(chunk as Buffer)
  } catch (error) {
    throw translate(error, 'read', uri)
  }
  return Buffer.concat(chunks)
}

export async function s3Read(uri: string): Promise<Buffer> {
  const {body} = await getObject(uri)
  return drain(body, uri)
}

/** Content and ETag of one object, from one GET (so they always belong together). */
export async function s3ReadVersioned(uri: string): Promise<{data: Buffer; etag: string} | undefined> {
  try {
    const {body, etag} = await getObject(uri)
    return {data: await drain(body, uri), etag}
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/** The object's bytes as they arrive (the GET is made before this returns, so a missing object rejects here). */
export async function s3ReadStream(uri: string): Promise<Readable> {
  const {body} = await getObject(uri)
  const {PassThrough} = await import('node:stream')
  const out = new PassThrough()
  body.on('error', (error) => out.destroy(translate(error, 'read', uri)))
  body.pipe(out)
  return out
}

export async function s3DownloadTo(uri: string, destination: string): Promise<void> {
  const {body} = await getObject(uri)
  try {
    await pipeline(body, createWriteStream(destination))
  } catch (error) {
    throw translate(error, 'read', uri)
  }
}

export interface S3WriteOptions {
  /** Fail with EEXIST when the object exists (If-None-Match: *). */
  createOnly?: boolean
  /** Fail with ECONFLICT unless the object's ETag is still this (If-Match). */
  ifEtag?: string
  contentType?: string
}

function conditions(options: S3WriteOptions): {IfNoneMatch?: string; IfMatch?: string} {
  if (options.createOnly) return {IfNoneMatch: '*'}
  if (options.ifEtag !== undefined) return {IfMatch: options.ifEtag}
  return {}
}

const md5 = (data: Uint8Array) => createHash('md5').update(data).digest()

/**
 * Uploads bytes as one object (a PUT is atomic: readers see the old object or the new one); returns
 * its ETag. A failed precondition is EEXIST (create-only) or ECONFLICT.
 */
export async function s3Write(uri: string, data: string | Uint8Array, options: S3WriteOptions = {}): Promise<string> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (bytes.length > PART_SIZE) return uploadBody(uri, bytes, options)
  const {bucket, key} = objectOf(uri)
  const {PutObjectCommand} = await commands()
  const put = await call(
    'write',
    uri,
    (c) => c.send(new PutObjectCommand({Bucket: bucket, Key: key, Body: bytes, ContentType: options.contentType ?? contentTypeOf(uri), ...conditions(options)})),
    options.createOnly ? 'create' : 'match',
  )
  return put.ETag ?? ''
}

function* partsOf(bytes: Buffer): Generator<Buffer> {
  for (let at = 0; at < bytes.length; at += PART_SIZE) yield bytes.subarray(at, at + PART_SIZE)
}

async function* fileParts(localPath: string): AsyncGenerator<Buffer> {
  // Chunks of exactly PART_SIZE (the last one shorter), the parts lib-storage uploads.
  for await (const chunk of createReadStream(localPath, {highWaterMark: PART_SIZE})) yield chunk as Buffer
}

/**
 * The ETag S3 gives an object uploaded in these parts: the MD5 of the content for a single PUT, or
 * the MD5 of the parts' MD5s followed by -<parts> for a multipart upload.
 */
async function expectedEtag(parts: Iterable<Buffer> | AsyncIterable<Buffer>): Promise<string> {
  const digests: Buffer[] = []
  let size = 0
  for await (const part of parts) {
    digests.push(md5(part))
    size += part.length
  }
  if (size <= PART_SIZE) return `"${(digests[0] ?? md5(Buffer.alloc(0))).toString('hex')}"`
  return `"${md5(Buffer.concat(digests)).toString('hex')}-${digests.length}"`
}

/** The object's ETag when it holds exactly `content` as uploaded here (single PUT or PART_SIZE parts), else undefined. */
export async function s3RevisionIfHolding(uri: string, content: WrittenContent): Promise<string | undefined> {
  const etag = await expectedEtag('bytes' in content ? partsOf(content.bytes) : fileParts(content.file))
  const info = await s3Stat(uri)
  return info?.etag === etag ? info.etag : undefined
}

/** Multipart (above PART_SIZE) or single upload through lib-storage, with the write's preconditions. */
async function uploadBody(uri: string, body: Buffer | Readable, options: S3WriteOptions): Promise<string> {
  const {bucket, key} = objectOf(uri)
  const {Upload} = await import('@aws-sdk/lib-storage')
  const done = await call(
    'write',
    uri,
    (c) =>
      new Upload({
        client: c,
        partSize: PART_SIZE,
        queueSize: PART_CONCURRENCY,
        // On failure the upload is aborted, so no parts are left to be billed.
        leavePartsOnError: false,
        // If-None-Match / If-Match apply to CompleteMultipartUpload (and to a single PUT).
        params: {Bucket: bucket, Key: key, Body: body, ContentType: options.contentType ?? contentTypeOf(uri), ...conditions(options)},
      }).done(),
    options.createOnly ? 'create' : 'match',
  )
  return done.ETag ?? (await s3Stat(uri))?.etag ?? ''
}

/** Uploads a local file (multipart in PART_SIZE parts above that size, so a failed part is resent alone); returns the ETag. */
export async function s3UploadFile(localPath: string, uri: string, options: S3WriteOptions = {}): Promise<string> {
  const size = (await stat(localPath)).size
  // lib-storage reads the stream in PART_SIZE parts; a read stream with that highWaterMark yields exactly those.
  return uploadBody(uri, size <= PART_SIZE ? await readFile(localPath) : createReadStream(localPath), options)
}

/** Deletes one object; a missing one is fine (S3 answers 204 either way). */
export async function s3Delete(uri: string): Promise<void> {
  const {bucket, key} = objectOf(uri)
  const {DeleteObjectCommand} = await commands()
  try {
    await call('delete', uri, (c) => c.send(new DeleteObjectCommand({Bucket: bucket, Key: key})))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
}

export interface S3Listing {
  objects: Array<{key: string; size: number}>
  /** Sub-prefixes ending in "/" (with a delimiter only). */
  prefixes: string[]
}

/** Pages of a listing under `prefix` (ListObjectsV2, following continuation tokens). */
async function* listPages(bucket: string, prefix: string, delimiter?: string, pageSize = 1000): AsyncGenerator<S3Listing> {
  const {ListObjectsV2Command} = await commands()
  const uri = s3Uri(bucket, prefix)
  let token: string | undefined
  do {
    const page = await call('list', uri, (c) =>
      c.send(new ListObjectsV2Command({Bucket: bucket, Prefix: prefix, MaxKeys: pageSize, ...(delimiter ? {Delimiter: delimiter} : {}), ...(token ? {ContinuationToken: token} : {})})),
    )
    yield {
      objects: (page.Contents ?? []).map((o) => ({key: o.Key ?? '', size: o.Size ?? 0})),
      prefixes: (page.CommonPrefixes ?? []).map((p) => p.Prefix ?? '').filter((p) => p !== ''),
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
}

export async function s3ListPrefix(bucket: string, prefix: string, delimiter?: string): Promise<S3Listing> {
  const listing: S3Listing = {objects: [], prefixes: []}
  for await (const page of listPages(bucket, prefix, delimiter)) {
    listing.objects.push(...page.objects)
    listing.prefixes.push(...page.prefixes)
  }
  return listing
}

/** Entries directly under a "directory": objects with their size, and sub-prefixes as folders. */
export async function s3ListEntries(dir: string): Promise<Array<{name: string; kind: 'file' | 'folder'; size?: number}>> {
  const {bucket, key} = parseS3Uri(dir)
  const prefix = key ? `${key}/` : ''
  const listing = await s3ListPrefix(bucket, prefix, '/')
  const entries: Array<{name: string; kind: 'file' | 'folder'; size?: number}> = []
  for (const object of listing.objects) if (object.key.length > prefix.length) entries.push({name: object.key.slice(prefix.length), kind: 'file', size: object.size})
  for (const p of listing.prefixes) entries.push({name: p.slice(prefix.length).replace(/\/$/, ''), kind: 'folder'})
  return entries.filter((e) => e.name.length > 0).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
}

export async function s3ListNames(dir: string): Promise<string[]> {
  return [...new Set((await s3ListEntries(dir)).map((e) => e.name))].sort()
}

/** True when `uri` is an object, or a "directory" with at least one object under it. */
export async function s3Exists(uri: string): Promise<boolean> {
  const {bucket, key} = parseS3Uri(uri)
  if (key && (await s3Stat(uri))) return true
  for await (const page of listPages(bucket, key ? `${key}/` : '', '/', 1)) return page.objects.length + page.prefixes.length > 0
  return false
}

/** Every object under `dir`, page by page in key order (S3 lists in UTF-8 binary order), as s3:// URIs. */
export async function* s3Walk(dir: string): AsyncGenerator<{path: string; size: number}> {
  const {bucket, key} = parseS3Uri(dir)
  for await (const page of listPages(bucket, key ? `${key}/` : '')) {
    // Zero-byte "folder" placeholders that the console creates are not files.
    for (const object of page.objects) if (!object.key.endsWith('/')) yield {path: s3Uri(bucket, object.key), size: object.size}
  }
}

/** Deletes an object and everything under it as a "directory" (DeleteObjects, 1000 keys a request). */
export async function s3Remove(uri: string): Promise<void> {
  const {bucket, key} = parseS3Uri(uri)
  if (!key) throw new UserError(`refusing to delete the whole bucket ${uri}`, {code: 'STORAGE_URI', exit: 'usage'})
  const {DeleteObjectsCommand} = await commands()
  const keys = (await s3ListPrefix(bucket, `${key}/`)).objects.map((o) => o.key)
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000)
    const result = await call('delete', uri, (c) => c.send(new DeleteObjectsCommand({Bucket: bucket, Delete: {Objects: batch.map((Key) => ({Key})), Quiet: true}})))
    const failed = (result.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey')
    if (failed.length > 0) throw translate(Object.assign(new Error(`${failed[0]!.Key}: ${failed[0]!.Message}`), {name: failed[0]!.Code}), 'delete', s3Uri(bucket, failed[0]!.Key ?? ''))
  }
  await s3Delete(uri)
}

/** Copies one object server-side (CopyObject; objects up to 5 GB, which model and run files are). */
async function s3Copy(from: S3Location, to: S3Location): Promise<void> {
  const {CopyObjectCommand} = await commands()
  const source = `${from.bucket}/${from.key.split('/').map(encodeURIComponent).join('/')}`
  await call('copy', s3Uri(from.bucket, from.key), (c) => c.send(new CopyObjectCommand({Bucket: to.bucket, Key: to.key, CopySource: source})))
}

/**
 * Replaces "directory" `target` with `staged`: S3 has no rename, so objects are copied server-side
 * (data files first, then JSON, so that a model.json never names weights not there yet), objects of
 * an older target that the new one lacks are deleted, then the staged copy is.
 */
export async function s3SwapDir(staged: string, target: string): Promise<void> {
  const from = parseS3Uri(staged)
  const to = parseS3Uri(target)
  const sources = (await s3ListPrefix(from.bucket, `${from.key}/`)).objects
  const relative = (k: string) => k.slice(from.key.length + 1)
  const isJson = (k: string) => k.endsWith('.json')
  const copy = (object: {key: string}) => s3Copy({bucket: from.bucket, key: object.key}, {bucket: to.bucket, key: `${to.key}/${relative(object.key)}`})
  await inParallel(sources.filter((o) => !isJson(o.key)), BULK_CONCURRENCY, copy)
  await inParallel(sources.filter((o) => isJson(o.key)), BULK_CONCURRENCY, copy)
  const kept = new Set(sources.map((o) => relative(o.key)))
  const old = (await s3ListPrefix(to.bucket, `${to.key}/`)).objects.filter((o) => !kept.has(o.key.slice(to.key.length + 1)))
  await inParallel(old, BULK_CONCURRENCY, (o) => s3Delete(s3Uri(to.bucket, o.key)))
  await s3Remove(staged)
}
