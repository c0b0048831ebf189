// The gcs source: images in Cloud Storage under a gs:// prefix, one sub-prefix per class (or one fixed
// label). Class prefixes are listed in parallel, objects fetched only when ingest reads them.
import type {GcsSourceConfig, S3SourceConfig} from '../../config/schema.js'
import {joinPath, listEntries, readBytes, walkFiles} from '../../storage/index.js'
import {UserError} from '../../errors.js'
import type {SourceContext, SourceItem} from './types.js'

/** Class prefixes listed ahead of the one being yielded; each listing is one request per 1000 objects. */
const LIST_AHEAD = 8

function configKey(ctx: SourceContext): string {
  return ctx.index === undefined ? 'data.sources[].uri' : `data.sources[${ctx.index}].uri`
}

interface Found {
  uri: string
  size: number
  /** The class prefix (first segment under the root); undefined for objects directly in the root. */
  classFolder: string | undefined
}

/** Hidden names are skipped, as the folder source skips dot files (e.g. .DS_Store uploaded with a folder). */
const hidden = (relative: string) => relative.split('/').some((segment) => segment.startsWith('.'))

async function collect(dir: string, root: string, classFolder: string | undefined, signal: AbortSignal | undefined): Promise<Found[]> {
  const found: Found[] = []
  for await (const file of walkFiles(dir)) {
    if (signal?.aborted) break
    if (!hidden(file.path.slice(root.length + 1))) found.push({uri: file.path, size: file.size, classFolder})
  }
  return found
}

/**
 * Lists the source in a deterministic order (class prefixes sorted, objects by name within each),
 * keeping up to LIST_AHEAD class listings in flight so that a bucket with many classes is not
 * listed one round trip at a time.
 */
async function* list(source: GcsSourceConfig | S3SourceConfig, ctx: SourceContext): AsyncGenerator<Found> {
  const root = source.uri.replace(/\/+$/, '')
  // The s3 source (s3.ts) lists the same way, through the same storage layer.
  if (!/^(gs|s3):\/\/[^/]+/.test(root)) {
    throw new UserError(`${configKey(ctx)}: ${source.uri} is not a gs:// or s3://bucket/prefix URI`, {code: 'SOURCE_UNSUPPORTED', exit: 'usage'})
  }
  if (source.label !== undefined) {
    yield* await collect(root, root, undefined, ctx.signal)
    return
  }
  const entries = await listEntries(root)
  if (entries.length === 0) {
    throw new UserError(`${configKey(ctx)}: nothing under ${root}`, {
      code: 'SOURCE_NOT_FOUND',
      exit: 'data',
      details: {key: configKey(ctx), uri: root},
      suggestions: [`A ${source.type} source needs one sub-prefix per class (${root.slice(0, 2)}://bucket/prefix/<class>/<image>), or \`label\` set.`],
    })
  }
  for (const entry of entries) {
    if (entry.kind === 'file' && !hidden(entry.name)) yield {uri: joinPath(root, entry.name), size: entry.size ?? 0, classFolder: undefined}
  }
  const classes = entries.filter((e) => e.kind === 'folder' && !hidden(e.name)).map((e) => e.name)
  const listings: Array<Promise<Found[]>> = []
  const start = (i: number) => {
    if (i < classes.length && listings[i] === undefined) listings[i] = collect(joinPath(root, classes[i]!), root, classes[i]!, ctx.signal)
  }
  for (let i = 0; i < Math.min(LIST_AHEAD, classes.length); i++) start(i)
  try {
    for (let i = 0; i < classes.length; i++) {
      if (ctx.signal?.aborted) return
      start(i + LIST_AHEAD)
      yield* await listings[i]!
    }
  } finally {
    // Listings still in flight when iteration stops early must not reject unobserved.
    for (const listing of listings) void listing?.catch(() => {})
  }
}

/**
 * Streams the images of a gcs source. Objects are downloaded by read(), which ingest calls with its
 * own concurrency limit (data.concurrency), so downloads run in parallel but bounded.
 */
export async function* openGcsSource(source: GcsSourceConfig | S3SourceConfig, ctx: SourceContext): AsyncGenerator<SourceItem> {
  for await (const found of list(source, ctx)) {
    if (ctx.signal?.aborted) return
    const item: SourceItem = {
      origin: found.uri,
      label: source.label ?? found.classFolder,
      size: found.size,
      read: () => readBytes(found.uri),
    }
    if (source.split !== undefined) item.split = source.split
    yield item
  }
}

/** Number of items openGcsSource would yield (a listing, no downloads). */
export async function countGcsSource(source: GcsSourceConfig | S3SourceConfig, ctx: SourceContext): Promise<number | undefined> {
  let count = 0
  for await (const _ of list(source, ctx)) count++
  return ctx.signal?.aborted ? undefined : count
}
