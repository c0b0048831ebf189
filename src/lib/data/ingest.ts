// `ml ingest`: streams every configured source through read -> hash -> normalise in parallel, sets
// bad inputs aside in the quarantine, dedupes and splits by content hash, and commits shards at once.
import {createHash} from 'node:crypto'
import os from 'node:os'
import {performance} from 'node:perf_hooks'
import {resolvePath} from '../config/load.js'
import {SPLITS, type MlConfig, type SourceConfig, type SplitName} from '../config/schema.js'
import {UserError} from '../errors.js'
import {normaliseImageDeferred, type ImageLimits} from './image.js'
import {
  countSource,
  isSourceStream,
  mergeCheckpoints,
  openSource,
  type SourceContext,
  type SourceItem,
  type SourceStream,
  type StreamObserver,
  TooLargeError,
} from './sources/index.js'
import {splitOf} from './splits.js'
import {DatasetStore, type ShardWriter} from './store.js'
import type {Bytes, DatasetManifest, RecordToWrite, SourceCheckpoints} from './types.js'

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
  /**
   * Keep stream sources (Kafka) open for new items. Commits happen every data.shardSize records and
   * at least every rollIntervalMs; aborting `signal` ends the run cleanly with a last commit.
   * Without it, stream sources are read up to where they stood at start (also committing every
   * shardSize records), and an abort drops what was not committed yet.
   */
  follow?: boolean
  /** Follow mode: the longest a handled item waits to be committed (default: the sources' rollIntervalMs, else 10 s). */
  rollIntervalMs?: number
  /** Watches the run: the Prometheus metrics of follow mode. */
  observer?: IngestObserver
}

export interface IngestObserver extends StreamObserver {
  rejected?(reason: string): void
  /** A commit published `shards` new shards as dataset `version` (called after offsets were acknowledged). */
  committed?(info: {version: number; shards: number; total: number}): void
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
  | {kind: 'ok'; key: string; label: string; split?: SplitName; origin: string; encoded: Bytes; width: number; height: number; channels: number}

/** Progress is reported at most this often (ms), apart from the first item, shard writes and the end. */
const PROGRESS_INTERVAL_MS = 100
/** Finished items waiting for their turn, per unit of concurrency: lets a slow image be overtaken. */
const WINDOW_PER_WORKER = 4
/** Follow mode's default longest wait between commits. */
const DEFAULT_ROLL_INTERVAL_MS = 10_000
const OLDEST = Symbol('oldest done')
const TICK = Symbol('tick')

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

const describeSource = (source: SourceConfig) =>
  source.type === 'folder' ? `${source.type}:${source.path}` : source.type === 'gcs' || source.type === 's3' ? `${source.type}:${source.uri}` : source.type === 'kinesis' ? `kinesis:${source.stream}` : `${source.type}:${source.topics.join(',')}`

/** Stream sources never end by themselves and commit as they go; folder and gcs sources are finite listings. */
const isStream = (source: SourceConfig) => source.type === 'kafka' || source.type === 'kinesis'

function resolveSource(source: SourceConfig, baseDir: string): SourceConfig {
  return source.type === 'folder' ? {...source, path: resolvePath({baseDir}, source.path)} : source
}

function interrupted(version: number | undefined, cause?: unknown, before?: number): UserError {
  const kept = version === undefined ? '' : version === 0 ? ' (the store stays empty)' : ` (the dataset stays at version ${version})`
  const what = before !== undefined && version !== undefined && version > before ? 'what this run had not committed yet was dropped' : 'nothing from this run was committed'
  return new UserError(`ingest interrupted: ${what}${kept}`, {code: 'INTERRUPTED', exit: 'interrupted', cause})
}

/** Resolves to TICK after `ms` unless `p` settles first. */
function unlessTimeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TICK> {
  if (!Number.isFinite(ms)) return p
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(TICK), Math.max(0, ms))
    p.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error) => {
        clearTimeout(timer)
        reject(error)
      },
    )
  })
}

/** Interleaves several streams, taking whichever has an item first (order within each is kept). */
async function* mergeStreams(streams: AsyncIterable<SourceItem>[]): AsyncGenerator<SourceItem> {
  const iterators = streams.map((s) => s[Symbol.asyncIterator]())
  const pending = new Map<number, Promise<{i: number; r: IteratorResult<SourceItem>}>>()
  const pull = (i: number) => pending.set(i, iterators[i]!.next().then((r) => ({i, r})))
  iterators.forEach((_, i) => pull(i))
  try {
    while (pending.size > 0) {
      const {i, r} = await Promise.race(pending.values())
      if (r.done) {
        pending.delete(i)
        continue
      }
      pull(i)
      yield r.value
    }
  } finally {
    // Not awaited: a stream blocked waiting for messages only ends when it is closed.
    for (const it of iterators) void it.return?.()?.catch(() => {})
  }
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error))

async function processItem(item: SourceItem, store: DatasetStore, config: MlConfig, limits: ImageLimits): Promise<Outcome> {
  const origin = item.origin
  const reject = (reason: string, detail: string): Outcome => ({kind: 'rejected', origin, reason, detail})
  if (item.problem) return reject(item.problem.reason, item.problem.detail)
  if (item.label === undefined || item.label === '') {
    return reject('no-label', 'no class: put the image in a class sub-folder, or set `label` on the source')
  }
  const tooLarge = (size: number) => reject('too-large', `${size} bytes, data.maxFileBytes is ${limits.maxFileBytes}`)
  // Skipping before the read saves fetching a huge remote object only to reject it.
  if (item.size !== undefined && item.size > limits.maxFileBytes) return tooLarge(item.size)
  let bytes: Buffer
  try {
    bytes = await item.read(limits.maxFileBytes)
  } catch (error) {
    if (error instanceof TooLargeError) return tooLarge(error.size)
    return reject('unreadable', messageOf(error))
  }
  const key = createHash('sha256').update(bytes).digest('hex')
  // Committed duplicates skip decoding, which makes re-ingesting unchanged sources cheap. Duplicates
  // within this run are settled in source order by the caller, so the same copy always wins.
  if (store.hasKey(key)) return {kind: 'duplicate'}
  try {
    const result = await normaliseImageDeferred(bytes, config.data.image, limits, {compression: config.data.compression})
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
    if (isStream(source)) continue
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
  const {config, baseDir, onProgress, signal, observer} = options
  const follow = options.follow === true
  const data = config.data
  const started = performance.now()
  const storeDir = resolvePath({baseDir}, data.store)
  const sources = data.sources.map((source) => resolveSource(source, baseDir))
  const ctx: SourceContext = signal ? {baseDir, signal} : {baseDir}
  const limits: ImageLimits = {maxPixels: data.maxPixels, maxFileBytes: data.maxFileBytes}
  const concurrency = data.concurrency ?? 2 * os.availableParallelism()
  // Stream sources are committed as they go (every shardSize records), so that their offsets can
  // be acknowledged and memory stays bounded however long the stream.
  const streaming = sources.some(isStream)
  const rollIntervalMs =
    options.rollIntervalMs ??
    sources.reduce<number | undefined>((min, s) => ((s.type === 'kafka' || s.type === 'kinesis') && s.rollIntervalMs !== undefined ? Math.min(min ?? Infinity, s.rollIntervalMs) : min), undefined) ??
    DEFAULT_ROLL_INTERVAL_MS
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

  const buffers: Record<SplitName, Array<{record: RecordToWrite; item: SourceItem}>> = {train: [], validation: [], test: []}
  const seen = new Set<string>()
  /** Drops a record whose source took it back (a revoked Kafka partition): its next owner stores it. */
  const keep = ({record, item}: {record: RecordToWrite; item: SourceItem}) => {
    if (!item.withdrawn?.()) return true
    seen.delete(record.key)
    counters.accepted--
    counters.seen--
    return false
  }
  const purge = () => {
    const before = counters.accepted
    for (const split of SPLITS) buffers[split] = buffers[split].filter(keep)
    if (counters.accepted !== before) report(true)
  }
  // Each accepted record is written into an open shard of its split at once: memory stays flat and
  // the writing overlaps decoding. Stream sources also keep a shard's records until it is
  // committed, as a revoked partition may take records back before then; a shard that lost some is
  // then written again from the records kept (rare: rebalances only).
  const open: Partial<Record<SplitName, ShardWriter>> = {}
  const flush = async (split: SplitName) => {
    const shard = open[split]
    delete open[split]
    const buffered = buffers[split]
    buffers[split] = []
    const records = buffered.filter(keep)
    if (shard !== undefined) {
      // The shard holds every record appended since it opened; for a stream, none may have left.
      if (!streaming || shard.count === records.length) {
        await shard.close()
        counters.shards++
        report(true)
        return
      }
      await shard.abort()
    }
    if (records.length === 0) return
    await store.writeShard(split, records.map((r) => r.record))
    counters.shards++
    report(true)
  }

  // Stream sources and what the last commit recorded; see commitAll().
  const streams: SourceStream[] = []
  let checkpoints: SourceCheckpoints | undefined = store.manifest?.sources
  const atCommit = {seen: 0, accepted: 0, duplicates: 0, rejected: 0, shards: 0}
  /**
   * Writes every buffered record, then commits: stream checkpoints (dead letters flushed), the
   * manifest recording them, and only then the offsets upstream. A crash between the last two
   * leaves the manifest ahead, which the stream recognises on restart.
   */
  const commitAll = async (): Promise<DatasetManifest> => {
    for (const split of SPLITS) await flush(split)
    for (const stream of streams) checkpoints = mergeCheckpoints(checkpoints, await stream.checkpoint())
    const manifest = await store.commit(
      {
        accepted: counters.accepted - atCommit.accepted,
        duplicates: counters.duplicates - atCommit.duplicates,
        rejected: counters.rejected - atCommit.rejected,
        sources: data.sources.map(describeSource),
      },
      checkpoints === undefined ? {} : {sources: checkpoints},
    )
    for (const stream of streams) await stream.committed(checkpoints!)
    const shards = counters.shards - atCommit.shards
    if (shards > 0) {
      // History counts what each version added; with nothing new no version was written.
      Object.assign(atCommit, {accepted: counters.accepted, duplicates: counters.duplicates, rejected: counters.rejected, shards: counters.shards})
      observer?.committed?.({version: manifest.version, shards, total: manifest.total})
    }
    atCommit.seen = counters.seen
    return manifest
  }

  const handle = async ({item, outcome: pending}: {item: SourceItem; outcome: Promise<Outcome>}) => {
    const outcome = await pending
    if (item.withdrawn?.()) {
      item.settle?.()
      return
    }
    counters.seen++
    let full: SplitName | undefined
    if (outcome.kind === 'rejected') {
      counters.rejected++
      rejectedByReason[outcome.reason] = (rejectedByReason[outcome.reason] ?? 0) + 1
      store.addQuarantine([{origin: outcome.origin, reason: outcome.reason, detail: outcome.detail, at: new Date().toISOString()}])
      item.reject?.(outcome.reason, outcome.detail)
      observer?.rejected?.(outcome.reason)
    } else if (outcome.kind === 'duplicate' || seen.has(outcome.key)) {
      counters.duplicates++
    } else {
      seen.add(outcome.key)
      counters.accepted++
      const split = outcome.split ?? splitOf(outcome.key, data.split)
      const record: RecordToWrite = {
        key: outcome.key,
        label: store.classIndex(outcome.label),
        text: outcome.label,
        encoded: outcome.encoded,
        height: outcome.height,
        width: outcome.width,
        channels: outcome.channels,
        origin: outcome.origin,
      }
      if (streaming) buffers[split].push({record, item})
      const shard = (open[split] ??= store.openShard(split))
      await shard.append(record)
      if (shard.count >= data.shardSize) full = split
    }
    // Settled before any commit below, so that the commit's checkpoint covers this item.
    item.settle?.()
    if (full !== undefined) await (streaming ? commitAll() : flush(full))
    report(false)
  }

  // Items are processed out of order but handled in source order, so that which copy of a
  // duplicate wins and what each shard holds do not depend on timing.
  const queue: Array<{item: SourceItem; outcome: Promise<Outcome>}> = []
  const run = limiter(concurrency)
  const window = concurrency * WINDOW_PER_WORKER
  const drain = async () => {
    while (queue.length > 0) await handle(queue.shift()!)
  }

  /** Reads the stream sources, all at once; in follow mode also commits on a timer. */
  const consume = async (iterable: AsyncIterable<SourceItem>) => {
    const iterator = iterable[Symbol.asyncIterator]()
    let pending: Promise<IteratorResult<SourceItem>> | undefined
    let rollAt = follow ? performance.now() + rollIntervalMs : Number.POSITIVE_INFINITY
    const roll = async () => {
      await drain()
      if (counters.seen !== atCommit.seen) await commitAll()
      rollAt = performance.now() + rollIntervalMs
    }
    let reportedSeen = -1
    for (;;) {
      pending ??= iterator.next()
      let next: IteratorResult<SourceItem> | typeof OLDEST | typeof TICK
      if (queue.length > 0) {
        // A stream can go quiet for a while: the oldest item is handled as soon as it is done
        // rather than when the window fills, and new items are still taken meanwhile.
        const oldest = queue[0]!.outcome.then(
          (): typeof OLDEST => OLDEST,
          (): typeof OLDEST => OLDEST,
        )
        next = await unlessTimeout(Promise.race([pending, oldest]), rollAt - performance.now())
      } else {
        if (counters.seen !== reportedSeen) {
          reportedSeen = counters.seen
          report(true)
        }
        next = await unlessTimeout(pending, rollAt - performance.now())
      }
      if (next === OLDEST) {
        await handle(queue.shift()!)
        continue
      }
      if (next === TICK) {
        await roll()
        continue
      }
      pending = undefined
      if (next.done) return
      const item = next.value
      queue.push({item, outcome: run(() => processItem(item, store, config, limits))})
      if (queue.length >= window) await handle(queue.shift()!)
      if (performance.now() >= rollAt) await roll()
    }
  }

  let manifest: DatasetManifest
  try {
    if (store.classes.length === 0) {
      const listing = await listSources(sources, ctx)
      store.registerClasses(listing.labels)
      if (!sources.some(isStream)) total = listing.count
    } else {
      // Only a progress total, so it must not hold the ingest up.
      Promise.all(sources.map((source, index) => countSource(source, {...ctx, index})))
        .then((counts) => {
          if (counts.every((n) => n !== undefined)) total = counts.reduce((sum: number, n) => sum + n!, 0)
        })
        .catch(() => {})
    }
    reading: for (const [index, source] of sources.entries()) {
      if (isStream(source)) continue
      // The index lets source errors name the config key (data.sources[1].path).
      for await (const item of openSource(source, {...ctx, index})) {
        if (signal?.aborted) break reading
        queue.push({item, outcome: run(() => processItem(item, store, config, limits))})
        // Awaiting the oldest item here is the backpressure: the source is not pulled again until
        // the window has room, and shards are written before more records pile up.
        if (queue.length >= window) await handle(queue.shift()!)
      }
    }
    if (streaming && !signal?.aborted) {
      const streamCtx: SourceContext = {...ctx, follow, observer: observer ?? {}, onWithdrawn: purge, ...(checkpoints ? {checkpoints} : {})}
      for (const [index, source] of sources.entries()) {
        if (!isStream(source)) continue
        const stream = openSource(source, {...streamCtx, index})
        if (!isSourceStream(stream)) throw new Error(`source type ${source.type} is not a stream`)
        streams.push(stream)
      }
      await consume(streams.length === 1 ? streams[0]! : mergeStreams(streams))
    }
    // Follow mode ends on the abort signal, and then finishes and commits what is in flight.
    if (follow) await drain()
    else while (queue.length > 0 && !signal?.aborted) await handle(queue.shift()!)
    if (signal?.aborted && !follow) throw interrupted(store.version, undefined, versionBefore)
    for (const split of SPLITS) await flush(split)
    // A stream that delivered only rejects is no error: they are quarantined and acknowledged.
    if (counters.accepted === 0 && store.total === 0 && !(streaming && (follow || counters.seen > 0))) {
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
    if (signal?.aborted && !follow) throw interrupted(store.version, undefined, versionBefore)
    manifest = await commitAll()
  } catch (error) {
    // Let in-flight reads finish before deleting files, then drop what this run wrote: the
    // committed dataset is untouched because no manifest names the new shards.
    try {
      await Promise.allSettled(queue.map((entry) => entry.outcome))
      await store.discard()
    } finally {
      await Promise.allSettled(streams.map((stream) => stream.close()))
      await store.close()
    }
    if (signal?.aborted) throw error instanceof UserError && error.code === 'INTERRUPTED' ? error : interrupted(store.version, error, versionBefore)
    throw error
  }
  await Promise.allSettled(streams.map((stream) => stream.close()))
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
