// `ml ingest`: streams every configured source through read -> hash -> normalise in parallel, sets
// bad inputs aside in the quarantine, dedupes and splits by content hash, and commits shards at once.
import {createHash} from 'node:crypto'
import os from 'node:os'
import {performance} from 'node:perf_hooks'
import {resolvePath} from '../config/load.js'
import {SPLITS, type MlConfig, type SourceConfig, type SplitName} from '../config/schema.js'
import {UserError} from '../ui/errors.js'
import {normaliseImage, type ImageLimits} from './image.js'
import {countSource, openSource, type SourceContext, type SourceItem} from './sources/index.js'
import {splitOf} from './splits.js'
import {DatasetStore} from './store.js'
import type {DatasetManifest, ImageRecord} from './types.js'

export interface IngestOptions {
  config: MlConfig
  /** Directory relative paths of the config (sources, store) are resolved against. */
  baseDir: string
  /**
   * Called after the first item, at most every 100 ms after that, after each shard written and at
   * the end; cheap enough to render a progress bar directly.
   */
  onProgress?: (p: IngestProgress) => void
  signal?: AbortSignal
}

export interface IngestProgress {
  seen: number
  /** Items the sources hold, when known (a listing pass or countSource could tell). */
  total?: number
  accepted: number
  rejected: number
  duplicates: number
  imagesPerSec: number
  /** Shards written so far by this run (not yet committed). */
  shards: number
}

export interface IngestSummary {
  accepted: number
  rejected: number
  duplicates: number
  /** Classes in the dataset after the run. */
  classes: number
  /** Shards written by this run. */
  shards: number
  imagesPerSec: number
  datasetVersion: number
  /** Absolute path of the dataset store. */
  store: string
  /** Examples in the dataset after the run. */
  total: number
  counts: DatasetManifest['counts']
  rejectedByReason: Record<string, number>
}

type Outcome =
  | {kind: 'rejected'; origin: string; reason: string; detail: string}
  | {kind: 'duplicate'}
  | {kind: 'ok'; key: string; label: string; split?: SplitName; origin: string; encoded: Uint8Array; width: number; height: number; channels: number}

/** Progress is reported at most this often (ms), apart from the first item, shard writes and the end. */
const PROGRESS_INTERVAL_MS = 100
/** Finished items waiting for their turn, per unit of concurrency: lets a slow image be overtaken. */
const WINDOW_PER_WORKER = 4

/** A counting semaphore that hands a released slot straight to the next waiter (never over the limit). */
function limiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0
  const waiting: Array<() => void> = []
  return async (task) => {
    if (active < limit) active++
    else await new Promise<void>((resolve) => waiting.push(resolve))
    try {
      return await task()
    } finally {
      const next = waiting.shift()
      if (next) next()
      else active--
    }
  }
}

const describeSource = (source: SourceConfig) => `${source.type}:${source.path}`

function resolveSource(source: SourceConfig, baseDir: string): SourceConfig {
  return {...source, path: resolvePath({baseDir}, source.path)}
}

function interrupted(version: number | undefined, cause?: unknown): UserError {
  const kept = version === undefined ? '' : version === 0 ? ' (the store stays empty)' : ` (the dataset stays at version ${version})`
  return new UserError(`ingest interrupted: nothing from this run was committed${kept}`, {code: 'INTERRUPTED', exit: 'interrupted', cause})
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error))

async function processItem(item: SourceItem, store: DatasetStore, config: MlConfig, limits: ImageLimits): Promise<Outcome> {
  const origin = item.origin
  const reject = (reason: string, detail: string): Outcome => ({kind: 'rejected', origin, reason, detail})
  if (item.label === undefined || item.label === '') {
    return reject('no-label', 'no class: put the image in a class sub-folder, or set `label` on the source')
  }
  // Skipping before the read saves fetching a huge remote object only to reject it.
  if (item.size !== undefined && item.size > limits.maxFileBytes) {
    return reject('too-large', `${item.size} bytes, data.maxFileBytes is ${limits.maxFileBytes}`)
  }
  let bytes: Buffer
  try {
    bytes = await item.read()
  } catch (error) {
    return reject('unreadable', messageOf(error))
  }
  const key = createHash('sha256').update(bytes).digest('hex')
  // Committed duplicates skip decoding, which makes re-ingesting unchanged sources cheap. Duplicates
  // within this run are settled in source order by the caller, so the same copy always wins.
  if (store.hasKey(key)) return {kind: 'duplicate'}
  try {
    const result = await normaliseImage(bytes, config.data.image, limits)
    if (!result.ok) return reject(result.reason, result.detail)
    return {
      kind: 'ok',
      key,
      label: item.label,
      ...(item.split === undefined ? {} : {split: item.split}),
      origin,
      encoded: result.encoded,
      width: result.width,
      height: result.height,
      channels: result.channels,
    }
  } catch (error) {
    return reject('corrupt', messageOf(error))
  }
}

/**
 * Lists the sources without reading images, for the class names and the item count. Only done on a
 * first ingest (so that class indices are sorted, which needs every name before the first shard is
 * written) and only for finite source types that can be listed cheaply.
 */
async function listSources(sources: SourceConfig[], ctx: SourceContext): Promise<{labels: Set<string>; count: number}> {
  const labels = new Set<string>()
  let count = 0
  for (const [index, source] of sources.entries()) {
    if (source.type !== 'folder') continue
    for await (const item of openSource(source, {...ctx, index})) {
      if (ctx.signal?.aborted) return {labels, count}
      count++
      if (item.label !== undefined && item.label !== '') labels.add(item.label)
    }
  }
  return {labels, count}
}

/** Ingests every source of `config.data` into its dataset store; see IngestOptions and IngestSummary. */
export async function runIngest(options: IngestOptions): Promise<IngestSummary> {
  const {config, baseDir, onProgress, signal} = options
  const data = config.data
  const started = performance.now()
  const storeDir = resolvePath({baseDir}, data.store)
  const sources = data.sources.map((source) => resolveSource(source, baseDir))
  const ctx: SourceContext = signal ? {baseDir, signal} : {baseDir}
  const limits: ImageLimits = {maxPixels: data.maxPixels, maxFileBytes: data.maxFileBytes}
  const concurrency = data.concurrency ?? 2 * os.availableParallelism()
  if (signal?.aborted) throw interrupted(undefined)

  const store = await DatasetStore.open(storeDir, data.image, data.split)
  const versionBefore = store.version
  let total: number | undefined
  const counters = {seen: 0, accepted: 0, rejected: 0, duplicates: 0, shards: 0}
  const rejectedByReason: Record<string, number> = {}
  const imagesPerSec = () => {
    const seconds = (performance.now() - started) / 1000
    return seconds > 0 ? counters.seen / seconds : 0
  }
  let lastReport = Number.NEGATIVE_INFINITY
  const report = (force: boolean) => {
    if (!onProgress) return
    const now = performance.now()
    if (!force && now - lastReport < PROGRESS_INTERVAL_MS) return
    lastReport = now
    onProgress({...counters, ...(total === undefined ? {} : {total}), imagesPerSec: imagesPerSec()})
  }

  const buffers: Record<SplitName, ImageRecord[]> = {train: [], validation: [], test: []}
  const seen = new Set<string>()
  const flush = async (split: SplitName) => {
    const records = buffers[split]
    if (records.length === 0) return
    buffers[split] = []
    await store.writeShard(split, records)
    counters.shards++
    report(true)
  }
  const handle = async (outcome: Outcome) => {
    counters.seen++
    if (outcome.kind === 'rejected') {
      counters.rejected++
      rejectedByReason[outcome.reason] = (rejectedByReason[outcome.reason] ?? 0) + 1
      store.addQuarantine([{origin: outcome.origin, reason: outcome.reason, detail: outcome.detail, at: new Date().toISOString()}])
    } else if (outcome.kind === 'duplicate' || seen.has(outcome.key)) {
      counters.duplicates++
    } else {
      seen.add(outcome.key)
      counters.accepted++
      const split = outcome.split ?? splitOf(outcome.key, data.split)
      buffers[split].push({
        key: outcome.key,
        label: store.classIndex(outcome.label),
        text: outcome.label,
        encoded: outcome.encoded,
        height: outcome.height,
        width: outcome.width,
        channels: outcome.channels,
        origin: outcome.origin,
      })
      if (buffers[split].length >= data.shardSize) await flush(split)
    }
    report(false)
  }

  // Items are processed out of order but handled in source order, so that which copy of a
  // duplicate wins and what each shard holds do not depend on timing.
  const queue: Array<Promise<Outcome>> = []
  const run = limiter(concurrency)
  const window = concurrency * WINDOW_PER_WORKER
  let manifest: DatasetManifest
  try {
    if (store.classes.length === 0) {
      const listing = await listSources(sources, ctx)
      store.registerClasses(listing.labels)
      if (sources.every((source) => source.type === 'folder')) total = listing.count
    } else {
      // Only a progress total, so it must not hold the ingest up.
      Promise.all(sources.map((source, index) => countSource(source, {...ctx, index})))
        .then((counts) => {
          if (counts.every((n) => n !== undefined)) total = counts.reduce((sum: number, n) => sum + n!, 0)
        })
        .catch(() => {})
    }
    reading: for (const [index, source] of sources.entries()) {
      // The index lets source errors name the config key (data.sources[1].path).
      for await (const item of openSource(source, {...ctx, index})) {
        if (signal?.aborted) break reading
        queue.push(run(() => processItem(item, store, config, limits)))
        // Awaiting the oldest item here is the backpressure: the source is not pulled again until
        // the window has room, and shards are written before more records pile up.
        if (queue.length >= window) await handle(await queue.shift()!)
      }
    }
    while (queue.length > 0 && !signal?.aborted) await handle(await queue.shift()!)
    if (signal?.aborted) throw interrupted(versionBefore)
    for (const split of SPLITS) await flush(split)
    if (counters.accepted === 0 && store.total === 0) {
      // Keep the reasons on disk: the quarantine is where the user will look next.
      await store.flushQuarantine()
      const reasons = Object.entries(rejectedByReason).map(([reason, n]) => `${n} ${reason}`)
      throw new UserError(
        `no images found in ${sources.map(describeSource).join(', ')}` +
          (counters.seen > 0 ? ` (${counters.seen} file${counters.seen === 1 ? '' : 's'} rejected: ${reasons.join(', ')})` : ''),
        {
          code: 'NO_IMAGES',
          exit: 'data',
          details: {sources: sources.map(describeSource), rejectedByReason},
          suggestions: [
            'A folder source needs one sub-folder per class holding PNG/JPEG/WebP/GIF/TIFF images (or set `label` on the source).',
            `Rejected files are listed in ${storeDir}/quarantine.jsonl.`,
          ],
        },
      )
    }
    if (signal?.aborted) throw interrupted(versionBefore)
    manifest = await store.commit({
      accepted: counters.accepted,
      duplicates: counters.duplicates,
      rejected: counters.rejected,
      sources: data.sources.map(describeSource),
    })
  } catch (error) {
    // Let in-flight reads finish before deleting files, then drop what this run wrote: the
    // committed dataset is untouched because no manifest names the new shards.
    try {
      await Promise.allSettled(queue)
      await store.discard()
    } finally {
      await store.close()
    }
    if (signal?.aborted) throw error instanceof UserError && error.code === 'INTERRUPTED' ? error : interrupted(versionBefore, error)
    throw error
  }
  await store.close()
  report(true)
  return {
    accepted: counters.accepted,
    rejected: counters.rejected,
    duplicates: counters.duplicates,
    classes: manifest.classes.length,
    shards: counters.shards,
    imagesPerSec: imagesPerSec(),
    datasetVersion: manifest.version,
    store: storeDir,
    total: manifest.total,
    counts: manifest.counts,
    rejectedByReason,
  }
}
