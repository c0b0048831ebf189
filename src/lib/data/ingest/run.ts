// An ingest run: streams every configured source through read -> hash -> normalise in parallel,
// handles the outcomes in source order (quarantine, dedupe, split, shard committer) and commits.
import os from 'node:os'
import {performance} from 'node:perf_hooks'
import {resolvePath} from '../../config/load.js'
import type {MlConfig, SourceConfig, SplitName} from '../../config/schema.js'
import {UserError} from '../../errors.js'
import type {ImageLimits} from '../image.js'
import {countSource, isSourceStream, openSource} from '../sources/index.js'
import type {SourceContext, SourceItem} from '../sources/types.js'
import {splitOf} from '../splits.js'
import {DatasetStore} from '../store.js'
import type {DatasetManifest, RecordToWrite} from '../types.js'
import {ShardCommitter} from './committer.js'
import {limiter, mergeStreams, TICK, unlessTimeout} from './flow.js'
import {processItem, type Outcome} from './item.js'
import {Tally} from './tally.js'
import type {IngestOptions, IngestSummary} from './types.js'

/** Finished items waiting for their turn, per unit of concurrency: lets a slow image be overtaken. */
const WINDOW_PER_WORKER = 4
/** Follow mode's default longest wait between commits. */
const DEFAULT_ROLL_INTERVAL_MS = 10_000
const OLDEST = Symbol('oldest done')

interface Queued {
  item: SourceItem
  outcome: Promise<Outcome>
}

export const describeSource = (source: SourceConfig) =>
  source.type === 'folder' ? `${source.type}:${source.path}` : source.type === 'gcs' || source.type === 's3' ? `${source.type}:${source.uri}` : source.type === 'kinesis' ? `kinesis:${source.stream}` : `${source.type}:${source.topics.join(',')}`

/** Stream sources never end by themselves and commit as they go; folder and gcs sources are finite listings. */
const isStream = (source: SourceConfig) => source.type === 'kafka' || source.type === 'kinesis'

/**
 * Kafka sources are read by consumer groups, whose members may be several `ml ingest` processes
 * writing one store together: a run of Kafka sources alone opens the store as a shared writer
 * (see DatasetStore). Anything else takes the store's exclusive lock.
 */
export const writesShared = (sources: readonly SourceConfig[]) => sources.length > 0 && sources.every((source) => source.type === 'kafka')

function resolveSource(source: SourceConfig, baseDir: string): SourceConfig {
  return source.type === 'folder' ? {...source, path: resolvePath({baseDir}, source.path)} : source
}

export function interrupted(version: number | undefined, cause?: unknown, before?: number): UserError {
  const kept = version === undefined ? '' : version === 0 ? ' (the store stays empty)' : ` (the dataset stays at version ${version})`
  const what = before !== undefined && version !== undefined && version > before ? 'what this run had not committed yet was dropped' : 'nothing from this run was committed'
  return new UserError(`ingest interrupted: ${what}${kept}`, {code: 'INTERRUPTED', exit: 'interrupted', cause})
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

export class IngestRun {
  private readonly config: MlConfig
  private readonly signal: AbortSignal | undefined
  private readonly follow: boolean
  private readonly storeDir: string
  private readonly sources: SourceConfig[]
  private readonly ctx: SourceContext
  private readonly limits: ImageLimits
  /** Stream sources are committed as they go (every shardSize records), so that their offsets can be acknowledged and memory stays bounded. */
  private readonly streaming: boolean
  private readonly rollIntervalMs: number
  private readonly tally: Tally
  private readonly committer: ShardCommitter
  private readonly versionBefore: number
  /** Keys accepted by this run, with the origin of the copy kept. */
  private readonly kept = new Map<string, string>()
  /**
   * Items being processed (out of order) and waiting to be handled (in source order), so that which
   * copy of a duplicate wins and what each shard holds do not depend on timing.
   */
  private readonly queue: Queued[] = []
  private readonly runLimited: <T>(task: () => Promise<T>) => Promise<T>
  private readonly window: number

  private constructor(
    private readonly options: IngestOptions,
    private readonly store: DatasetStore,
    started: number,
  ) {
    const {config, baseDir, signal} = options
    const data = config.data
    this.config = config
    this.signal = signal
    this.follow = options.follow === true
    this.storeDir = resolvePath({baseDir}, data.store)
    this.sources = data.sources.map((source) => resolveSource(source, baseDir))
    this.ctx = signal ? {baseDir, signal} : {baseDir}
    this.limits = {maxPixels: data.maxPixels, maxFileBytes: data.maxFileBytes}
    const concurrency = data.concurrency ?? 2 * os.availableParallelism()
    this.runLimited = limiter(concurrency)
    this.window = concurrency * WINDOW_PER_WORKER
    this.streaming = this.sources.some(isStream)
    this.rollIntervalMs =
      options.rollIntervalMs ??
      this.sources.reduce<number | undefined>((min, s) => ((s.type === 'kafka' || s.type === 'kinesis') && s.rollIntervalMs !== undefined ? Math.min(min ?? Infinity, s.rollIntervalMs) : min), undefined) ??
      DEFAULT_ROLL_INTERVAL_MS
    this.tally = new Tally(started, options.onProgress)
    this.versionBefore = store.version
    this.committer = new ShardCommitter(store, this.tally, {
      streaming: this.streaming,
      shardSize: data.shardSize,
      sources: data.sources.map(describeSource),
      ...(options.observer ? {observer: options.observer} : {}),
      forget: (key) => this.kept.delete(key),
    })
  }

  /** Opens the dataset store (taking its writer lock) for a run of `options`. */
  static async open(options: IngestOptions): Promise<IngestRun> {
    const started = performance.now()
    const data = options.config.data
    if (options.signal?.aborted) throw interrupted(undefined)
    const store = await DatasetStore.open(resolvePath({baseDir: options.baseDir}, data.store), data.image, data.split, {shared: writesShared(data.sources)})
    return new IngestRun(options, store, started)
  }

  /** Reads every source, commits, and releases the store; see IngestSummary. */
  async execute(): Promise<IngestSummary> {
    let manifest: DatasetManifest
    try {
      await this.learnClasses()
      await this.readFinite()
      if (this.streaming && !this.signal?.aborted) await this.readStreams()
      manifest = await this.finish()
    } catch (error) {
      throw await this.abandon(error)
    }
    await this.committer.closeStreams()
    await this.store.close()
    this.tally.report(true)
    return this.summary(manifest)
  }

  /** On a first ingest, lists the sources for sorted class indices; otherwise counts them for progress. */
  private async learnClasses(): Promise<void> {
    if (this.store.classes.length === 0) {
      const listing = await listSources(this.sources, this.ctx)
      this.store.registerClasses(listing.labels)
      if (!this.streaming) this.tally.total = listing.count
      return
    }
    // Only a progress total, so it must not hold the ingest up.
    Promise.all(this.sources.map((source, index) => countSource(source, {...this.ctx, index})))
      .then((counts) => {
        if (counts.every((n) => n !== undefined)) this.tally.total = counts.reduce((sum: number, n) => sum + n!, 0)
      })
      .catch(() => {})
  }

  private enqueue(item: SourceItem): void {
    this.queue.push({item, outcome: this.runLimited(() => processItem(item, this.store, this.config, this.limits))})
  }

  private async handleOldest(): Promise<void> {
    await this.handle(this.queue.shift()!)
  }

  /** Reads the folder and gcs sources, in config order. */
  private async readFinite(): Promise<void> {
    for (const [index, source] of this.sources.entries()) {
      if (isStream(source)) continue
      // The index lets source errors name the config key (data.sources[1].path).
      for await (const item of openSource(source, {...this.ctx, index})) {
        if (this.signal?.aborted) return
        this.enqueue(item)
        // Awaiting the oldest item here is the backpressure: the source is not pulled again until
        // the window has room, and shards are written before more records pile up.
        if (this.queue.length >= this.window) await this.handleOldest()
      }
    }
  }

  /** Opens the stream sources and consumes them together. */
  private async readStreams(): Promise<void> {
    const checkpoints = this.committer.committedCheckpoints
    const streamCtx: SourceContext = {
      ...this.ctx,
      follow: this.follow,
      observer: this.options.observer ?? {},
      onWithdrawn: () => this.committer.purge(),
      latestCheckpoints: () => this.store.latestSources(),
      ...(checkpoints ? {checkpoints} : {}),
    }
    const streams = this.committer.streams
    for (const [index, source] of this.sources.entries()) {
      if (!isStream(source)) continue
      const stream = openSource(source, {...streamCtx, index})
      if (!isSourceStream(stream)) throw new Error(`source type ${source.type} is not a stream`)
      streams.push(stream)
    }
    await this.consume(streams.length === 1 ? streams[0]! : mergeStreams(streams))
  }

  /** Reads the stream sources, all at once; in follow mode also commits on a timer. */
  private async consume(iterable: AsyncIterable<SourceItem>): Promise<void> {
    const iterator = iterable[Symbol.asyncIterator]()
    let pending: Promise<IteratorResult<SourceItem>> | undefined
    let rollAt = this.follow ? performance.now() + this.rollIntervalMs : Number.POSITIVE_INFINITY
    const roll = async () => {
      await this.drain()
      if (this.committer.uncommitted) await this.committer.commit()
      rollAt = performance.now() + this.rollIntervalMs
    }
    let reportedSeen = -1
    for (;;) {
      pending ??= iterator.next()
      let next: IteratorResult<SourceItem> | typeof OLDEST | typeof TICK
      if (this.queue.length > 0) {
        // A stream can go quiet for a while: the oldest item is handled as soon as it is done
        // rather than when the window fills, and new items are still taken meanwhile.
        const oldest = this.queue[0]!.outcome.then(
          (): typeof OLDEST => OLDEST,
          (): typeof OLDEST => OLDEST,
        )
        next = await unlessTimeout(Promise.race([pending, oldest]), rollAt - performance.now())
      } else {
        if (this.tally.seen !== reportedSeen) {
          reportedSeen = this.tally.seen
          this.tally.report(true)
        }
        next = await unlessTimeout(pending, rollAt - performance.now())
      }
      if (next === OLDEST) {
        await this.handleOldest()
        continue
      }
      if (next === TICK) {
        await roll()
        continue
      }
      pending = undefined
      if (next.done) return
      this.enqueue(next.value)
      if (this.queue.length >= this.window) await this.handleOldest()
      if (performance.now() >= rollAt) await roll()
    }
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) await this.handleOldest()
  }

  /** Handles one item's outcome, in source order: quarantine, duplicate, or a record for its split's shard. */
  private async handle({item, outcome: pending}: Queued): Promise<void> {
    const outcome = await pending
    if (item.withdrawn?.()) {
      item.settle?.()
      return
    }
    const tally = this.tally
    tally.seen++
    let full: SplitName | undefined
    if (outcome.kind === 'rejected') {
      tally.reject(outcome.reason)
      this.store.addQuarantine([{origin: outcome.origin, reason: outcome.reason, detail: outcome.detail, at: new Date().toISOString()}])
      item.reject?.(outcome.reason, outcome.detail)
      this.options.observer?.rejected?.(outcome.reason)
    } else if (outcome.kind === 'duplicate' || this.kept.has(outcome.key)) {
      tally.duplicates++
      // Listed with the copy kept: this run's, else the store names the committed one at commit.
      const first = this.kept.get(outcome.key)
      this.store.addDuplicates([{origin: outcome.origin, key: outcome.key, ...(first === undefined ? {} : {duplicateOf: first}), at: new Date().toISOString()}])
    } else {
      this.kept.set(outcome.key, outcome.origin)
      tally.accepted++
      const split = outcome.split ?? splitOf(outcome.key, this.config.data.split)
      const record: RecordToWrite = {
        key: outcome.key,
        label: await this.store.ensureClass(outcome.label),
        text: outcome.label,
        encoded: outcome.encoded,
        height: outcome.height,
        width: outcome.width,
        channels: outcome.channels,
        origin: outcome.origin,
      }
      if (await this.committer.add(split, record, item)) full = split
    }
    // Settled before any commit below, so that the commit's checkpoint covers this item.
    item.settle?.()
    if (full !== undefined) await (this.streaming ? this.committer.commit() : this.committer.flush(full))
    tally.report(false)
  }

  /** Handles what is still queued, checks that something was found, and commits. */
  private async finish(): Promise<DatasetManifest> {
    const aborted = () => this.signal?.aborted === true
    // Follow mode ends on the abort signal, and then finishes and commits what is in flight.
    if (this.follow) await this.drain()
    else while (this.queue.length > 0 && !aborted()) await this.handleOldest()
    if (aborted() && !this.follow) throw interrupted(this.store.version, undefined, this.versionBefore)
    // A stream's shards are closed by the commit itself, after its positions are taken (see
    // ShardCommitter.commit): closing them here could publish records of a partition revoked since.
    if (!this.streaming) await this.committer.flushAll()
    // A stream that delivered only rejects is no error: they are quarantined and acknowledged.
    if (this.tally.accepted === 0 && this.store.total === 0 && !(this.streaming && (this.follow || this.tally.seen > 0))) {
      // Keep the reasons on disk: the quarantine is where the user will look next.
      await this.store.flushQuarantine()
      throw this.noImages()
    }
    if (aborted() && !this.follow) throw interrupted(this.store.version, undefined, this.versionBefore)
    return this.committer.commit()
  }

  private noImages(): UserError {
    const {seen, rejectedByReason} = this.tally
    const reasons = Object.entries(rejectedByReason).map(([reason, n]) => `${n} ${reason}`)
    return new UserError(
      `no images found in ${this.sources.map(describeSource).join(', ')}` +
        (seen > 0 ? ` (${seen} file${seen === 1 ? '' : 's'} rejected: ${reasons.join(', ')})` : ''),
      {
        code: 'NO_IMAGES',
        exit: 'data',
        details: {sources: this.sources.map(describeSource), rejectedByReason},
        suggestions: [
          'A folder source needs one sub-folder per class holding PNG/JPEG/WebP/GIF/TIFF images (or set `label` on the source).',
          `Rejected files are listed in ${this.storeDir}/quarantine.jsonl.`,
        ],
      },
    )
  }

  /**
   * Drops what this run wrote and releases everything, returning the error to throw: the committed
   * dataset is untouched because no manifest names the new shards.
   */
  private async abandon(error: unknown): Promise<unknown> {
    try {
      // In-flight reads finish before files are deleted.
      await Promise.allSettled(this.queue.map((entry) => entry.outcome))
      await this.store.discard()
    } finally {
      await this.committer.closeStreams()
      await this.store.close()
    }
    if (this.signal?.aborted) {
      return error instanceof UserError && error.code === 'INTERRUPTED' ? error : interrupted(this.store.version, error, this.versionBefore)
    }
    return error
  }

  private summary(manifest: DatasetManifest): IngestSummary {
    const tally = this.tally
    return {
      accepted: tally.accepted,
      rejected: tally.rejected,
      duplicates: tally.duplicates,
      classes: manifest.classes.length,
      shards: tally.shards,
      imagesPerSec: tally.imagesPerSec(),
      datasetVersion: manifest.version,
      store: this.storeDir,
      total: manifest.total,
      counts: manifest.counts,
      rejectedByReason: tally.rejectedByReason,
    }
  }
}
