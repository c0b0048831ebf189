// The Cloud Storage backend of the storage layer: gs://bucket/key paths on @google-cloud/storage, with
// retries on 429/5xx (uploads included), create-only and generation-matched writes, and clear auth errors.
import {createHash} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {stat} from 'node:fs/promises'
import type {Readable} from 'node:stream'
import type {File, Storage} from '@google-cloud/storage'
import {UserError} from '../errors.js'
import {importOptional} from '../optional.js'
import {contentTypeOf, inParallel, storageError, type WrittenContent} from './object-store.js'

/** Files above this size are uploaded with a resumable session (each chunk retried on its own). */
export const RESUMABLE_THRESHOLD = 8 * 1024 * 1024
/** A multiple of 256 KiB, as the resumable protocol requires. */
const CHUNK_SIZE = 8 * 1024 * 1024
/** Parallel requests for bulk deletes and copies (a "directory" is many objects). */
const BULK_CONCURRENCY = 8

export interface GcsSettings {
  /** A stand-in or emulator (http://127.0.0.1:4443); undefined = the real service. */
  endpoint?: string
  /** adc: Application Default Credentials; none: anonymous (emulators). */
  auth: 'adc' | 'none'
  maxRetries: number
  /** Cap of the exponential backoff between retries. */
  maxRetryDelayMs: number
}

/** Reads the settings from the environment: ML_GCS_ENDPOINT (or STORAGE_EMULATOR_HOST), ML_GCS_AUTH, ML_GCS_RETRIES, ML_GCS_MAX_RETRY_DELAY_MS. */
export function settingsFromEnv(env: NodeJS.ProcessEnv = process.env): GcsSettings {
  const endpoint = env.ML_GCS_ENDPOINT || env.STORAGE_EMULATOR_HOST || undefined
  const auth = env.ML_GCS_AUTH === 'adc' || env.ML_GCS_AUTH === 'none' ? env.ML_GCS_AUTH : endpoint ? 'none' : 'adc'
  const number = (value: string | undefined, fallback: number) => (value !== undefined && value !== '' && Number.isFinite(Number(value)) ? Number(value) : fallback)
  return {
    // host:port, as emulators and the other languages' clients take it; a Node-style value ending in
    // /storage/v1 names the same server.
    ...(endpoint ? {endpoint: (/^https?:\/\//.test(endpoint) ? endpoint : `http://${endpoint}`).replace(/\/storage\/v1\/?$/, '').replace(/\/$/, '')} : {}),
    auth,
    maxRetries: number(env.ML_GCS_RETRIES, 6),
    maxRetryDelayMs: number(env.ML_GCS_MAX_RETRY_DELAY_MS, 32_000),
  }
}

let overrides: Partial<GcsSettings> | undefined
let client: Promise<Storage> | undefined
let credentials: Promise<void> | undefined

/** Replaces the environment's settings (tests point the backend at a stand-in); resets the client. */
export function configureGcs(settings: Partial<GcsSettings> | undefined): void {
  overrides = settings
  client = undefined
  credentials = undefined
}

function settings(): GcsSettings {
  return {...settingsFromEnv(), ...overrides}
}

async function storage(): Promise<Storage> {
  client ??= (async () => {
    // Loaded on first use: local-only runs never pay for the client library.
    const {Storage, IdempotencyStrategy} = await importOptional('@google-cloud/storage', () => import('@google-cloud/storage'))
    const s = settings()
    const storage = new Storage({
      ...(s.endpoint ? {apiEndpoint: s.endpoint, useAuthWithCustomEndpoint: s.auth === 'adc'} : {}),
      retryOptions: {
        autoRetry: true,
        maxRetries: s.maxRetries,
        retryDelayMultiplier: 2,
        // Uploads retry through async-retry, whose first wait is fixed at 1 s and which rejects a
        // smaller cap, so the cap is never below that.
        maxRetryDelay: Math.max(1, s.maxRetryDelayMs / 1000),
        totalTimeout: 600,
        // Every write here is safe to repeat: plain writes put the same bytes again, and create-only
        // or generation-matched ones are settled by the storage layer when a retry meets its own
        // earlier success (see gcsRevisionIfHolding).
        // The default (RetryConditional) would not retry uploads without ifGenerationMatch at all.
        idempotencyStrategy: IdempotencyStrategy.RetryAlways,
      },
    })
    // The Node client takes STORAGE_EMULATOR_HOST, when set, verbatim as its JSON API base URL
    // (without the /storage/v1 that host:port needs), while uploads use apiEndpoint: with the usual
    // host:port value every read went to /b/... and failed. The base follows the endpoint chosen here.
    if (s.endpoint) storage.baseUrl = `${s.endpoint}/storage/v1`
    return storage
  })()
  const s = await client
  await checkCredentials(s)
  return s
}

const AUTH_HELP = [
  'Run `gcloud auth application-default login` (a workstation), or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file.',
  'On Google Cloud (Vertex AI, GCE, GKE) the attached service account is used: check that it has the Storage roles it needs.',
]

export function gcsAuthError(cause: unknown): UserError {
  const detail = cause instanceof Error ? cause.message.split('\n')[0] : String(cause)
  return new UserError(`no usable Google Cloud credentials for Cloud Storage: ${detail}`, {
    code: 'GCS_AUTH',
    exit: 'service',
    cause,
    suggestions: AUTH_HELP,
  })
}

/**
 * Resolves Application Default Credentials once, before the first request: missing credentials then
 * fail at once with what to set, instead of deep inside a retried upload.
 */
async function checkCredentials(s: Storage): Promise<void> {
  if (settings().auth === 'none') return
  credentials ??= (async () => {
    await s.authClient.getClient()
  })()
  try {
    await credentials
  } catch (error) {
    throw gcsAuthError(error)
  }
}

export interface GsLocation {
  bucket: string
  /** The object name (or prefix), without a leading slash; empty for the bucket root. */
  key: string
}

export function parseGsUri(uri: string): GsLocation {
  const match = /^gs:\/\/([^/]+)\/?(.*)$/.exec(uri)
  if (!match || !/^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$/.test(match[1]!)) {
    throw new UserError(`${uri} is not a valid gs:// URI (gs://<bucket>/<path>)`, {code: 'STORAGE_URI', exit: 'usage'})
  }
  return {bucket: match[1]!, key: match[2]!.replace(/\/+$/, '')}
}

export const gsUri = (bucket: string, key: string) => `gs://${bucket}/${key}`

async function fileOf(uri: string, generation?: string): Promise<File> {
  const {bucket, key} = parseGsUri(uri)
  if (!key) throw new UserError(`${uri} names a bucket, not an object`, {code: 'STORAGE_URI', exit: 'usage'})
  const s = await storage()
  return s.bucket(bucket).file(key, generation === undefined ? {} : {generation: Number(generation)})
}

interface ApiError {
  code?: number | string
  message?: string
  errors?: Array<{reason?: string}>
}

const statusOf = (error: unknown) => {
  const code = (error as ApiError | undefined)?.code
  return typeof code === 'number' ? code : typeof code === 'string' && /^\d+$/.test(code) ? Number(code) : undefined
}

/**
 * Turns a client error into what the storage layer promises: ENOENT for a missing object, EEXIST /
 * ECONFLICT for failed preconditions, and UserErrors (exit 5) for auth and service failures.
 */
function translate(error: unknown, action: string, uri: string, precondition?: 'create' | 'match'): Error {
  if (error instanceof UserError) return error
  const status = statusOf(error)
  const message = (error as ApiError | undefined)?.message ?? String(error)
  if (status === 404) {
    if (/bucket does not exist/i.test(message)) {
      return new UserError(`cannot ${action} ${uri}: bucket ${parseGsUri(uri).bucket} does not exist`, {
        code: 'GCS_BUCKET_NOT_FOUND',
        exit: 'usage',
        cause: error,
        suggestions: ['Check the bucket name, or create it: `gcloud storage buckets create gs://<bucket>`.'],
      })
    }
    return storageError('ENOENT', `${uri}: no such object`, error)
  }
  if (status === 412) {
    return precondition === 'create'
      ? storageError('EEXIST', `${uri} already exists`, error)
      : storageError('ECONFLICT', `${uri} was changed by another writer`, error)
  }
  if (status === 401 || /Could not load the default credentials|invalid_grant|Could not refresh access token|unauthorized_client/i.test(message)) {
    return gcsAuthError(error)
  }
  if (status === 403) {
    return new UserError(`permission denied to ${action} ${uri}: ${message}`, {
      code: 'GCS_FORBIDDEN',
      exit: 'service',
      cause: error,
      suggestions: ['Grant the account in use a Storage role on the bucket (e.g. roles/storage.objectAdmin), or use other credentials.', ...AUTH_HELP.slice(0, 1)],
    })
  }
  return new UserError(`Cloud Storage failed to ${action} ${uri}: ${message}`, {
    code: 'GCS_UNAVAILABLE',
    exit: 'service',
    cause: error,
    suggestions: ['Retried with backoff already; check connectivity and https://status.cloud.google.com, then run the command again.'],
  })
}

async function call<T>(action: string, uri: string, work: () => Promise<T>, precondition?: 'create' | 'match'): Promise<T> {
  try {
    return await work()
  } catch (error) {
    throw translate(error, action, uri, precondition)
  }
}

export interface GcsObjectInfo {
  size: number
  generation: string
  md5Hash?: string
}

/** Size and generation of an object, or undefined when it does not exist. */
export async function gcsStat(uri: string): Promise<GcsObjectInfo | undefined> {
  const file = await fileOf(uri)
  try {
    const [meta] = await call('read', uri, () => file.getMetadata())
    return {size: Number(meta.size ?? 0), generation: String(meta.generation), ...(meta.md5Hash ? {md5Hash: meta.md5Hash} : {})}
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

export async function gcsRead(uri: string, generation?: string): Promise<Buffer> {
  const file = await fileOf(uri, generation)
  const [data] = await call('read', uri, () => file.download())
  return data
}

/** The content and generation of one object, read consistently (the download is pinned to the generation). */
export async function gcsReadVersioned(uri: string): Promise<{data: Buffer; generation: string} | undefined> {
  for (let attempt = 0; ; attempt++) {
    const info = await gcsStat(uri)
    if (!info) return undefined
    try {
      return {data: await gcsRead(uri, info.generation), generation: info.generation}
    } catch (error) {
      // Replaced between the two requests: read the new one.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw error
    }
  }
}

export async function gcsReadStream(uri: string): Promise<Readable> {
  const file = await fileOf(uri)
  const stream = file.createReadStream()
  // Errors surface on the stream; give them the same meaning as everywhere else.
  const {PassThrough} = await import('node:stream')
  const out = new PassThrough()
  stream.on('error', (error) => out.destroy(translate(error, 'read', uri)))
  stream.pipe(out)
  return out
}

export async function gcsDownloadTo(uri: string, destination: string): Promise<void> {
  const file = await fileOf(uri)
  await call('read', uri, () => file.download({destination}))
}

export interface GcsWriteOptions {
  /** Fail with EEXIST when the object exists (ifGenerationMatch=0). */
  createOnly?: boolean
  /** Fail with ECONFLICT unless the object is at this generation. */
  ifGeneration?: string
  contentType?: string
}

function preconditionOpts(options: GcsWriteOptions): {ifGenerationMatch: number} | undefined {
  if (options.createOnly) return {ifGenerationMatch: 0}
  if (options.ifGeneration !== undefined) return {ifGenerationMatch: Number(options.ifGeneration)}
  return undefined
}

/**
 * Uploads bytes as one object (atomic: readers see the old object or the new one); returns its
 * generation. A failed precondition is EEXIST (create-only) or ECONFLICT.
 */
export async function gcsWrite(uri: string, data: string | Uint8Array, options: GcsWriteOptions = {}): Promise<string> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const file = await fileOf(uri)
  const preconditions = preconditionOpts(options)
  await call(
    'write',
    uri,
    () =>
      file.save(bytes, {
        resumable: bytes.length > RESUMABLE_THRESHOLD,
        ...(bytes.length > RESUMABLE_THRESHOLD ? {chunkSize: CHUNK_SIZE} : {}),
        contentType: options.contentType ?? contentTypeOf(uri),
        ...(preconditions ? {preconditionOpts: preconditions} : {}),
      }),
    options.createOnly ? 'create' : 'match',
  )
  return String(file.metadata.generation ?? (await gcsStat(uri))?.generation ?? '')
}

/** Uploads a local file (resumable above 8 MiB, so a failed chunk is resent rather than the whole file). */
export async function gcsUploadFile(localPath: string, uri: string, options: GcsWriteOptions = {}): Promise<string> {
  const {bucket, key} = parseGsUri(uri)
  const s = await storage()
  const size = (await stat(localPath)).size
  const preconditions = preconditionOpts(options)
  const [file] = await call(
    'write',
    uri,
    () =>
      s.bucket(bucket).upload(localPath, {
        destination: key,
        resumable: size > RESUMABLE_THRESHOLD,
        ...(size > RESUMABLE_THRESHOLD ? {chunkSize: CHUNK_SIZE} : {}),
        contentType: options.contentType ?? contentTypeOf(uri),
        ...(preconditions ? {preconditionOpts: preconditions} : {}),
      }),
    options.createOnly ? 'create' : 'match',
  )
  return String(file.metadata.generation ?? '')
}

/** The object's generation when it holds exactly `content` (compared by the MD5 Cloud Storage keeps), else undefined. */
export async function gcsRevisionIfHolding(uri: string, content: WrittenContent): Promise<string | undefined> {
  const hash = createHash('md5')
  if ('bytes' in content) hash.update(content.bytes)
  else for await (const chunk of createReadStream(content.file)) hash.update(chunk as Buffer)
  const info = await gcsStat(uri)
  return info?.md5Hash === hash.digest('base64') ? info.generation : undefined
}

/** Deletes one object; a missing one is fine. With `ifGeneration`, only that generation (ECONFLICT otherwise). */
export async function gcsDelete(uri: string, ifGeneration?: string): Promise<void> {
  const file = await fileOf(uri)
  try {
    await call('delete', uri, () => file.delete(ifGeneration === undefined ? {} : {ifGenerationMatch: Number(ifGeneration)}), 'match')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
}

export interface GcsListing {
  /** Full object names directly under the prefix (or all under it, without a delimiter). */
  objects: Array<{name: string; size: number; generation: string}>
  /** Sub-prefixes ending in "/" (with a delimiter only). */
  prefixes: string[]
}

/** Lists a bucket under `prefix`, following page tokens. */
export async function gcsListPrefix(bucketName: string, prefix: string, delimiter?: string, pageSize = 1000): Promise<GcsListing> {
  const uri = gsUri(bucketName, prefix)
  const s = await storage()
  const bucket = s.bucket(bucketName)
  const listing: GcsListing = {objects: [], prefixes: []}
  let pageToken: string | undefined
  do {
    const [files, next, response] = await call('list', uri, () =>
      bucket.getFiles({prefix, autoPaginate: false, maxResults: pageSize, ...(delimiter ? {delimiter} : {}), ...(pageToken ? {pageToken} : {})}),
    )
    for (const file of files) listing.objects.push({name: file.name, size: Number(file.metadata.size ?? 0), generation: String(file.metadata.generation ?? '')})
    listing.prefixes.push(...(((response as {prefixes?: string[]} | undefined)?.prefixes ?? []) as string[]))
    pageToken = (next as {pageToken?: string} | null | undefined)?.pageToken
  } while (pageToken)
  return listing
}

/** Entry names directly under a "directory" (objects and sub-prefixes), like readdir. */
export async function gcsListNames(dir: string): Promise<string[]> {
  const {bucket, key} = parseGsUri(dir)
  const prefix = key ? `${key}/` : ''
  const listing = await gcsListPrefix(bucket, prefix, '/')
  const names = new Set<string>()
  for (const object of listing.objects) if (object.name.length > prefix.length) names.add(object.name.slice(prefix.length))
  for (const p of listing.prefixes) names.add(p.slice(prefix.length).replace(/\/$/, ''))
  return [...names].filter((n) => n.length > 0).sort()
}

/** True when `uri` is an object, or a "directory" with at least one object under it. */
export async function gcsExists(uri: string): Promise<boolean> {
  const {bucket, key} = parseGsUri(uri)
  if (key && (await gcsStat(uri))) return true
  const listing = await gcsListPrefixOnce(bucket, key ? `${key}/` : '')
  return listing > 0
}

async function gcsListPrefixOnce(bucketName: string, prefix: string): Promise<number> {
  const s = await storage()
  const [files, , response] = await call('list', gsUri(bucketName, prefix), () =>
    s.bucket(bucketName).getFiles({prefix, autoPaginate: false, maxResults: 1, delimiter: '/'}),
  )
  return files.length + (((response as {prefixes?: string[]} | undefined)?.prefixes ?? []) as string[]).length
}

/** Deletes an object and everything under it as a "directory". */
export async function gcsRemove(uri: string): Promise<void> {
  const {bucket, key} = parseGsUri(uri)
  if (!key) throw new UserError(`refusing to delete the whole bucket ${uri}`, {code: 'STORAGE_URI', exit: 'usage'})
  const listing = await gcsListPrefix(bucket, `${key}/`)
  await inParallel(listing.objects, BULK_CONCURRENCY, (object) => gcsDelete(gsUri(bucket, object.name)))
  await gcsDelete(uri)
}

/**
 * Replaces "directory" `target` with `staged`: GCS has no rename, so objects are copied server-side
 * (data files first, then JSON, so that a model.json never names weights not there yet), objects
 * of an older target that the new one lacks are deleted, then the staged copy is.
 */
export async function gcsSwapDir(staged: string, target: string): Promise<void> {
  const from = parseGsUri(staged)
  const to = parseGsUri(target)
  const s = await storage()
  const sources = (await gcsListPrefix(from.bucket, `${from.key}/`)).objects
  const relative = (name: string) => name.slice(from.key.length + 1)
  const isJson = (name: string) => name.endsWith('.json')
  const copy = async (object: {name: string}) => {
    const destination = s.bucket(to.bucket).file(`${to.key}/${relative(object.name)}`)
    await call('copy', gsUri(from.bucket, object.name), () => s.bucket(from.bucket).file(object.name).copy(destination))
  }
  await inParallel(sources.filter((o) => !isJson(o.name)), BULK_CONCURRENCY, copy)
  await inParallel(sources.filter((o) => isJson(o.name)), BULK_CONCURRENCY, copy)
  const kept = new Set(sources.map((o) => relative(o.name)))
  const old = (await gcsListPrefix(to.bucket, `${to.key}/`)).objects.filter((o) => !kept.has(o.name.slice(to.key.length + 1)))
  await inParallel(old, BULK_CONCURRENCY, (object) => gcsDelete(gsUri(to.bucket, object.name)))
  await gcsRemove(staged)
}

/** Every object under `prefix`, page by page in name order, without holding the whole listing. */
export async function* gcsWalk(bucketName: string, prefix: string, pageSize = 1000): AsyncGenerator<{name: string; size: number}> {
  const uri = gsUri(bucketName, prefix)
  const s = await storage()
  const bucket = s.bucket(bucketName)
  let pageToken: string | undefined
  do {
    const [files, next] = await call('list', uri, () => bucket.getFiles({prefix, autoPaginate: false, maxResults: pageSize, ...(pageToken ? {pageToken} : {})}))
    for (const file of files) yield {name: file.name, size: Number(file.metadata.size ?? 0)}
    pageToken = (next as {pageToken?: string} | null | undefined)?.pageToken
  } while (pageToken)
}

/** Entries directly under a "directory": objects with their size, and sub-prefixes as folders. */
export async function gcsListEntries(dir: string): Promise<Array<{name: string; kind: 'file' | 'folder'; size?: number}>> {
  const {bucket, key} = parseGsUri(dir)
  const prefix = key ? `${key}/` : ''
  const listing = await gcsListPrefix(bucket, prefix, '/')
  const entries: Array<{name: string; kind: 'file' | 'folder'; size?: number}> = []
  for (const object of listing.objects) if (object.name.length > prefix.length) entries.push({name: object.name.slice(prefix.length), kind: 'file', size: object.size})
  for (const p of listing.prefixes) entries.push({name: p.slice(prefix.length).replace(/\/$/, ''), kind: 'folder'})
  return entries.filter((e) => e.name.length > 0).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
}
