// The kafka source: a consumer group whose messages become SourceItems. Offsets are committed to
// Kafka only after ingest has committed the manifest holding them, which also records them itself.
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import type {Admin, Consumer, EachBatchPayload, IHeaders, KafkaMessage, Message, Producer} from 'kafkajs'
import type {KafkaSourceConfig} from '../../config/schema.js'
import {UserError} from '../../errors.js'
import {createKafka, type KafkaClient} from '../kafka-client.js'
import type {MovedPartition} from '../checkpoints.js'
import type {SourceCheckpoints, SourceClaims, SourceContext, SourceItem, SourceStream} from './types.js'

/** Headers added to a dead-lettered message (the original headers are kept). */
export const DEAD_LETTER_HEADERS = {
  reason: 'ml-reject-reason',
  detail: 'ml-reject-detail',
  topic: 'ml-source-topic',
  partition: 'ml-source-partition',
  offset: 'ml-source-offset',
} as const

// A fetch answer is taken whole, so in-flight memory can reach maxInFlightBytes plus one answer:
// answers are capped at half of it (within these bounds; a message larger than that still comes,
// alone, since brokers always return at least one batch).
const MAX_FETCH_BYTES = 10 << 20
const MIN_FETCH_BYTES = 4 << 10
const PARTITION_FETCH_BYTES = 1 << 20

interface Part {
  topic: string
  partition: number
  /** Bumped when the partition is revoked: items of an older epoch are withdrawn. */
  epoch: number
  assigned: boolean
  /** Next offset to hand out; kafkajs redelivers older ones after a rebalance, and they are dropped. */
  delivered: bigint
  /** Every offset below this is settled by ingest (or was never ours to handle). */
  settled: bigint
  /** Every offset below this is in a committed manifest (or committed in Kafka before we started). */
  durable: bigint
  committedKafka: bigint
  /** Default mode: the high watermark at start; the partition is done once delivered reaches it. */
  target: bigint | undefined
  /** Items of the current epoch handed out (or queued) and not settled. */
  pending: number
  /** Offset to seek to on first assignment (the manifest is ahead of the group's offset). */
  seekTo: bigint | undefined
  /**
   * False for a partition (re)gained from another member: its group offset may have moved on, so
   * nothing is recorded or committed for it until its first message shows where it stands, lest
   * the group's offset go backwards.
   */
  baseKnown: boolean
  /**
   * The partition's position in the latest manifest as this member last read or wrote it
   * (undefined: none recorded). A commit claims it (SourceClaims): if another member recorded the
   * partition since, none of this one's records for it are published (see resync()).
   */
  claim: bigint | undefined
  /** While set, the latest manifest's position is being read after an assignment: batches wait for it. */
  base: Promise<void> | undefined
  /**
   * Set by resync() until a message at or below it arrives: a batch fetched before the seek starts
   * further on, and taking it would skip the offsets in between (see onBatch).
   */
  resyncTo: bigint | undefined
  /** Seeks asked for again since resync(); bounded, as a compacted topic may lack the offset itself. */
  resyncSeeks: number
}

interface Entry {
  part: Part
  epoch: number
  bytes: number
  offset: bigint
  item: SourceItem
  done: boolean
}

/** A promise to wait on (`done`) and the call that settles it (`end`). */
interface Gate {
  done: Promise<void>
  end: () => void
}

function gate(): Gate {
  let end!: () => void
  const done = new Promise<void>((resolve) => (end = resolve))
  return {done, end}
}

const key = (topic: string, partition: number) => `${topic}\u0000${partition}`
const max = (a: bigint, b: bigint) => (a > b ? a : b)
const describe = (error: unknown) => (error instanceof Error ? error.message : String(error))

function headerValue(headers: IHeaders | undefined, name: string): string | undefined {
  const raw = headers?.[name]
  const value = Array.isArray(raw) ? raw[0] : raw
  if (value === undefined || value === null) return undefined
  const text = value.toString()
  return text === '' ? undefined : text
}

/**
 * The consumer behind a kafka source. Iterating it starts the consumer; the iteration ends once
 * every assigned partition has reached the high watermark seen at start (default mode), or when
 * ctx.signal aborts (follow mode, where it otherwise waits for new messages forever).
 */
/**
 * The group's committed offsets. On a new cluster the first group makes the broker create its offsets
 * topic, and until that is loaded OffsetFetch answers a retriable NOT_COORDINATOR or
 * COORDINATOR_LOAD_IN_PROGRESS, which kafkajs's admin passes on instead of retrying: retry it here, briefly.
 */
async function fetchCommitted(admin: Admin, groupId: string, topics: string[]): ReturnType<Admin['fetchOffsets']> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await admin.fetchOffsets({groupId, topics})
    } catch (error) {
      if (attempt >= 12 || (error as {retriable?: boolean}).retriable !== true) throw error
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** attempt)))
    }
  }
}

export class KafkaSourceStream implements SourceStream {
  private client: KafkaClient | undefined
  private admin: Admin | undefined
  private consumer: Consumer | undefined
  private producer: Producer | undefined
  private readonly parts = new Map<string, Part>()
  private readonly queue: Entry[] = []
  /** Message bytes queued or handed out and not yet settled: the in-flight memory. */
  private bytes = 0
  private overLimit = false
  private joined = false
  private failure: Error | undefined
  private wakeup: (() => void) | undefined
  private deadLetters: Message[] = []
  private deadLetterFlush: Promise<void> | undefined
  private deadLetterError: unknown
  /** Next offsets per partition as recorded in the manifest read at start. */
  private readonly recorded = new Map<string, bigint>()
  private snapshot: Array<{part: Part; epoch: number; offset: bigint}> = []
  private snapshotClaims: SourceClaims = {}
  /**
   * From checkpoint() to committed(): the records of the commit are decided, so a new assignment
   * waits (deferredAssignment) lest a partition be revoked while its records are being published
   * without its position. A partition's new owner may meanwhile read it from the previous position:
   * the claims then let only one of the two commits through.
   */
  private committing = false
  private deferredAssignment: {assignment: Record<string, number[]>; memberId: string} | undefined
  /**
   * Set while an assignment is deferred. kafkajs fetches for the new generation as soon as it has
   * joined, from the group's committed offsets: its batches wait here until the assignment takes
   * effect, lest they be read against the old one (offsets below what was delivered before would be
   * resolved as redelivered, and after a rejoin, which reads them again, never fetched again).
   */
  private assignmentPending: Gate | undefined
  /** The member id of the assignment in effect: kafkajs rejoins with a new one after its session expired. */
  private memberId: string | undefined
  /**
   * From kafkajs's REBALANCING (it is rejoining the group) to the next assignment: any partition
   * may be revoked, so a commit waits for the assignment before taking its positions.
   */
  private rebalancing: Gate | undefined
  private rebalanceTimeout = 0
  private closed = false
  private readonly keyName: string
  private readonly onAbort = () => this.wake()

  constructor(
    readonly source: KafkaSourceConfig,
    private readonly ctx: SourceContext,
  ) {
    this.keyName = ctx.index === undefined ? 'data.sources[]' : `data.sources[${ctx.index}]`
    for (const [topic, partitions] of Object.entries(ctx.checkpoints?.kafka?.[source.groupId] ?? {})) {
      for (const [partition, offset] of Object.entries(partitions)) this.recorded.set(key(topic, Number(partition)), BigInt(offset))
    }
  }

  private get follow(): boolean {
    return this.ctx.follow === true
  }

  async *[Symbol.asyncIterator](): AsyncIterator<SourceItem> {
    await this.start()
    this.ctx.signal?.addEventListener('abort', this.onAbort)
    try {
      for (;;) {
        if (this.failure) throw this.failure
        const entry = this.queue.shift()
        if (entry) {
          if (entry.epoch !== entry.part.epoch) {
            this.release(entry)
            continue
          }
          yield entry.item
          continue
        }
        if (this.ctx.signal?.aborted || this.closed) return
        if (!this.follow && this.caughtUp()) return
        await new Promise<void>((resolve) => (this.wakeup = resolve))
        this.wakeup = undefined
      }
    } finally {
      this.ctx.signal?.removeEventListener('abort', this.onAbort)
    }
  }

  private wake(): void {
    this.wakeup?.()
  }

  private caughtUp(): boolean {
    if (!this.joined) return false
    for (const part of this.parts.values()) {
      if (part.assigned && !this.isDone(part)) return false
    }
    return true
  }

  private isDone(part: Part): boolean {
    return part.target !== undefined && part.delivered >= part.target
  }

  private async start(): Promise<void> {
    const {source} = this
    try {
      const client = await createKafka(source, {key: this.keyName, baseDir: this.ctx.baseDir})
      this.client = client
      this.admin = client.kafka.admin()
      await this.admin.connect()
      const existing = new Set(await this.admin.listTopics())
      for (const topic of [...source.topics, ...(source.deadLetterTopic ? [source.deadLetterTopic] : [])]) {
        if (existing.has(topic)) continue
        const which = topic === source.deadLetterTopic ? 'deadLetterTopic' : 'topics'
        throw new UserError(`${this.keyName}.${which}: topic ${topic} does not exist on ${source.brokers.join(', ')}`, {
          code: 'SOURCE_NOT_FOUND',
          exit: 'data',
          details: {key: `${this.keyName}.${which}`, topic},
          suggestions: ['Create the topic first (the kafka source never creates topics), or fix its name.'],
        })
      }
      const committed = new Map<string, bigint>()
      for (const {topic, partitions} of await fetchCommitted(this.admin, source.groupId, source.topics)) {
        for (const {partition, offset} of partitions) if (BigInt(offset) >= 0n) committed.set(key(topic, partition), BigInt(offset))
      }
      for (const topic of source.topics) {
        for (const {partition, low, high} of await this.admin.fetchTopicOffsets(topic)) {
          const k = key(topic, partition)
          const kafkaOffset = committed.get(k)
          const manifestOffset = this.recorded.get(k)
          let start: bigint
          let seekTo: bigint | undefined
          if (manifestOffset !== undefined && (kafkaOffset === undefined || manifestOffset > kafkaOffset)) {
            // A crash came between a manifest commit and its offset commit: resume after what the
            // manifest holds rather than redeliver it.
            start = manifestOffset
            seekTo = manifestOffset
          } else if (kafkaOffset !== undefined) {
            start = kafkaOffset
          } else {
            start = source.fromBeginning ? BigInt(low) : BigInt(high)
          }
          this.parts.set(k, this.newPart(topic, partition, start, {committedKafka: kafkaOffset ?? -1n, target: BigInt(high), seekTo, baseKnown: true, claim: manifestOffset}))
        }
      }
      const sessionTimeout = source.sessionTimeoutMs
      this.rebalanceTimeout = Math.max(sessionTimeout, 10_000)
      const fetchBytes = Math.min(MAX_FETCH_BYTES, Math.max(MIN_FETCH_BYTES, Math.floor(source.maxInFlightBytes / 2)))
      this.consumer = client.kafka.consumer({
        groupId: source.groupId,
        allowAutoTopicCreation: false,
        sessionTimeout,
        rebalanceTimeout: this.rebalanceTimeout,
        heartbeatInterval: Math.max(100, Math.min(3000, Math.floor(sessionTimeout / 10))),
        // How long a fetch waits for data, and kafkajs sleeps when every partition is paused. Stopping
        // waits for that, so a run to the end of the topic would spend up to this long after its last
        // message; a following consumer keeps Kafka's usual half second.
        maxWaitTimeInMs: this.follow ? 500 : 100,
        maxBytes: fetchBytes,
        maxBytesPerPartition: Math.min(PARTITION_FETCH_BYTES, fetchBytes),
      })
      const consumer = this.consumer
      consumer.on(consumer.events.REBALANCING, () => this.rebalanceStarted())
      consumer.on(consumer.events.GROUP_JOIN, (event) => {
        this.rebalanceEnded()
        this.assign(event.payload.memberAssignment, event.payload.memberId)
      })
      consumer.on(consumer.events.CRASH, (event) => {
        this.rebalanceEnded()
        if (!event.payload.restart) this.fail(client.failed(event.payload.error))
      })
      await consumer.connect()
      await consumer.subscribe({topics: source.topics, fromBeginning: source.fromBeginning})
      await consumer.run({autoCommit: false, eachBatchAutoResolve: false, eachBatch: (payload) => this.onBatch(payload)})
    } catch (error) {
      await this.close()
      // Without a client, createKafka itself failed, with a UserError that says why.
      throw this.client ? this.client.failed(error) : error
    }
  }

  private rebalanceStarted(): void {
    this.rebalancing ??= gate()
  }

  private rebalanceEnded(): void {
    this.rebalancing?.end()
    this.rebalancing = undefined
  }

  /**
   * Waits (at most the rebalance timeout) for the assignment of a rebalance under way: its GROUP_JOIN
   * drops the work of the partitions this member loses, which the commit must not record, and
   * whose offsets it could no longer commit.
   */
  private async settleRebalance(): Promise<void> {
    const rebalancing = this.rebalancing
    if (!rebalancing || this.closed) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([rebalancing.done, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.rebalanceTimeout)))])
    clearTimeout(timer)
  }

  private fail(error: Error): void {
    this.failure ??= error
    this.wake()
  }

  /** A partition's state before its first message: every position at `start`. */
  private newPart(
    topic: string,
    partition: number,
    start: bigint,
    at: {committedKafka: bigint; target: bigint; seekTo: bigint | undefined; baseKnown: boolean; claim: bigint | undefined},
  ): Part {
    return {
      topic,
      partition,
      epoch: 0,
      assigned: false,
      delivered: start,
      settled: start,
      durable: start,
      committedKafka: at.committedKafka,
      // Follow mode has no end: only the default mode stops at the start-time high watermark.
      target: this.follow ? undefined : at.target,
      pending: 0,
      seekTo: at.seekTo,
      baseKnown: at.baseKnown,
      claim: at.claim,
      base: undefined,
      resyncTo: undefined,
      resyncSeeks: 0,
    }
  }

  private part(topic: string, partition: number): Part {
    const k = key(topic, partition)
    let part = this.parts.get(k)
    if (!part) {
      // A partition added after start: in default mode there was nothing in it to catch up with.
      const start = this.recorded.get(k) ?? 0n
      part = this.newPart(topic, partition, start, {committedKafka: -1n, target: 0n, seekTo: undefined, baseKnown: false, claim: this.recorded.get(k)})
      this.parts.set(k, part)
    }
    return part
  }

  /**
   * A new generation's assignment: revoked partitions drop their unsettled work, which kafkajs will
   * hand to the new owner. A new member id means that the group went on without this member (its
   * session expired: heartbeats that came too late, under load, say), and then every partition is
   * revoked, those assigned again included: in the generations it missed another member may have
   * consumed and committed them, and their work buffered here would be stored a second time. They
   * are read again from the group's committed offsets, where kafkajs starts a new generation.
   */
  private assign(assignment: Record<string, number[]>, memberId: string): void {
    if (this.committing) {
      this.deferredAssignment = {assignment, memberId}
      this.assignmentPending ??= gate()
      return
    }
    const rejoined = this.memberId !== undefined && this.memberId !== memberId
    this.memberId = memberId
    const now = new Set<string>()
    for (const [topic, partitions] of Object.entries(assignment)) for (const p of partitions) now.add(key(topic, p))
    let revoked = false
    for (const [k, part] of this.parts) {
      if (part.assigned && (rejoined || !now.has(k))) {
        revoked = true
        part.assigned = false
        part.epoch++
        part.pending = 0
        part.settled = part.durable
        part.delivered = part.durable
        for (let i = this.queue.length - 1; i >= 0; i--) {
          const entry = this.queue[i]!
          if (entry.part === part) {
            this.queue.splice(i, 1)
            this.release(entry)
          }
        }
      }
    }
    // One read of the latest manifest for the whole assignment.
    let latest: Promise<SourceCheckpoints | undefined> | undefined
    for (const k of now) {
      const [topic, partition] = k.split('\u0000') as [string, string]
      const part = this.part(topic, Number(partition))
      if (!part.assigned && part.epoch > 0) part.baseKnown = false
      // Other members may have moved a newly assigned partition on since this one last saw it.
      if (!part.assigned && this.ctx.latestCheckpoints) part.base = this.loadBase(part, part.epoch, (latest ??= this.ctx.latestCheckpoints()))
      part.assigned = true
      if (part.seekTo !== undefined) {
        this.consumer!.seek({topic, partition: part.partition, offset: part.seekTo.toString()})
        part.seekTo = undefined
      }
    }
    this.joined = true
    if (rejoined) {
      this.ctx.observer?.warn?.(
        `rejoined consumer group ${this.source.groupId} as a new member (its session had expired, or its consumer restarted): the work not yet committed is read again from the group's offsets; raise sessionTimeoutMs if this recurs`,
      )
    }
    if (revoked) this.ctx.onWithdrawn?.()
    this.ctx.observer?.assigned?.(assignment)
    this.applyPause()
    this.wake()
  }

  /**
   * Starts a newly assigned partition from the latest committed manifest's position (not from the
   * manifest read at start, nor from the group's offset, which trails the manifest by a crash
   * between the two commits): messages below it are in the dataset already, stored by this or
   * another member, and are skipped.
   */
  private async loadBase(part: Part, epoch: number, read: Promise<SourceCheckpoints | undefined>): Promise<void> {
    try {
      const latest = await read
      if (part.epoch !== epoch) return
      const value = latest?.kafka?.[this.source.groupId]?.[part.topic]?.[String(part.partition)]
      part.claim = value === undefined ? undefined : BigInt(value)
      if (part.claim !== undefined && part.pending === 0 && part.claim > part.delivered) {
        part.delivered = part.claim
        part.settled = part.claim
        part.durable = part.claim
      }
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)))
    } finally {
      if (part.epoch === epoch) part.base = undefined
    }
  }

  /** Pauses done partitions (default mode) and, while over maxInFlightBytes, all of them. */
  private applyPause(): void {
    const consumer = this.consumer
    if (!consumer || this.closed) return
    if (this.overLimit && this.bytes <= this.source.maxInFlightBytes / 2) {
      this.overLimit = false
      this.ctx.observer?.paused?.(false)
    }
    const pause = new Map<string, number[]>()
    const resume = new Map<string, number[]>()
    for (const part of this.parts.values()) {
      if (!part.assigned) continue
      const target = this.overLimit || this.isDone(part) ? pause : resume
      const list = target.get(part.topic) ?? []
      list.push(part.partition)
      target.set(part.topic, list)
    }
    if (pause.size > 0) consumer.pause([...pause].map(([topic, partitions]) => ({topic, partitions})))
    if (resume.size > 0) consumer.resume([...resume].map(([topic, partitions]) => ({topic, partitions})))
  }

  private async onBatch({batch, resolveOffset}: EachBatchPayload): Promise<void> {
    while (this.assignmentPending) await this.assignmentPending.done
    const part = this.part(batch.topic, batch.partition)
    const epoch = part.epoch
    if (part.base) await part.base
    // A batch fetched before a revoke: its messages belong to the next owner now (or, for a
    // partition assigned again meanwhile, are fetched again from the group's committed offset).
    if (!part.assigned || part.epoch !== epoch || this.closed) return
    const first = batch.messages[0]
    if (part.resyncTo !== undefined && first !== undefined) {
      if (BigInt(first.offset) > part.resyncTo && part.resyncSeeks++ < 20) {
        // Fetched before resync()'s seek: left unresolved, and the seek asked for again.
        this.consumer?.seek({topic: part.topic, partition: part.partition, offset: part.resyncTo.toString()})
        return
      }
      part.resyncTo = undefined
    }
    let count = 0
    for (const message of batch.messages) {
      const offset = BigInt(message.offset)
      if (part.target !== undefined && offset >= part.target) break
      part.baseKnown = true
      if (offset < part.delivered) {
        // Already handed out, or below what a manifest holds: redelivered after a rebalance or a crash.
        if (part.pending === 0) part.settled = max(part.settled, offset + 1n)
        resolveOffset(message.offset)
        continue
      }
      // Anything skipped before this offset (compaction, another owner's work) is not ours to wait for.
      if (part.pending === 0 && offset > part.settled) part.settled = offset
      part.delivered = offset + 1n
      this.enqueue(part, message, offset)
      resolveOffset(message.offset)
      count++
    }
    if (count > 0) this.ctx.observer?.consumed?.(batch.topic, batch.partition, count)
    const lag = BigInt(batch.highWatermark) - part.delivered
    this.ctx.observer?.lag?.(batch.topic, batch.partition, Number(lag > 0n ? lag : 0n))
    if (this.bytes > this.source.maxInFlightBytes && !this.overLimit) {
      this.overLimit = true
      this.ctx.observer?.paused?.(true)
    }
    this.applyPause()
    this.wake()
  }

  private enqueue(part: Part, message: KafkaMessage, offset: bigint): void {
    const {source} = this
    const value = message.value ?? Buffer.alloc(0)
    const origin = `kafka:${part.topic}/${part.partition}/${offset}`
    const entry: Entry = {part, epoch: part.epoch, bytes: value.length, offset, done: false, item: undefined as unknown as SourceItem}
    const item: SourceItem = {
      origin,
      label: undefined,
      read: async () => value,
      settle: () => this.settle(entry),
      reject: (reason, detail) => this.deadLetter(part, offset, message, reason, detail),
      withdrawn: () => entry.epoch !== part.epoch,
    }
    if (source.format === 'json') {
      this.fromJson(item, value)
    } else {
      item.size = value.length
      item.label = source.label ?? (source.labelFrom === 'key' ? (message.key?.toString('utf8') || undefined) : headerValue(message.headers, source.labelHeader))
      if (item.label === undefined) {
        const where = source.labelFrom === 'key' ? 'an empty key' : `no \`${source.labelHeader}\` header`
        item.problem = {reason: 'no-label', detail: `${where}: the class name goes there (labelFrom/labelHeader), or set \`label\` on the source`}
      }
    }
    entry.item = item
    part.pending++
    this.bytes += entry.bytes
    this.queue.push(entry)
  }

  /**
   * format json: the value is {label, uri} naming a local file (a path or file:// URI). Object URIs
   * (gs://...) are quarantined as unsupported-uri: this source reads message values and local files,
   * while buckets are read by the gcs source.
   */
  private fromJson(item: SourceItem, value: Buffer): void {
    let parsed: unknown
    try {
      parsed = JSON.parse(value.toString('utf8'))
    } catch (error) {
      // Not the parser's message: it quotes the value, and a quarantine entry never holds content.
      item.problem = {reason: 'bad-message', detail: `the value (${value.length} bytes) is not JSON${error instanceof SyntaxError ? '' : `: ${describe(error)}`}`}
      return
    }
    const body = parsed as {label?: unknown; uri?: unknown}
    if (typeof parsed !== 'object' || parsed === null || typeof body.uri !== 'string' || body.uri === '') {
      item.problem = {reason: 'bad-message', detail: 'expected a JSON object {"label": ..., "uri": ...} with a string uri'}
      return
    }
    item.label = typeof body.label === 'string' && body.label !== '' ? body.label : this.source.label
    const uri = body.uri
    let file: string
    if (/^file:\/\//i.test(uri)) {
      file = fileURLToPath(uri)
    } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) {
      const scheme = uri.slice(0, uri.indexOf(':'))
      item.problem = {
        reason: 'unsupported-uri',
        detail: `${uri}: ${scheme}:// objects are not read by the kafka source yet; use a local path or a file:// URI, or a gcs source for a bucket`,
      }
      return
    } else {
      file = path.resolve(this.ctx.baseDir, uri)
    }
    item.read = () => readFile(file)
  }

  private settle(entry: Entry): void {
    if (entry.done) return
    this.release(entry)
    const part = entry.part
    if (entry.epoch === part.epoch) {
      part.pending--
      part.settled = max(part.settled, entry.offset + 1n)
    }
    if (this.overLimit) this.applyPause()
  }

  private release(entry: Entry): void {
    if (entry.done) return
    entry.done = true
    this.bytes -= entry.bytes
  }

  private deadLetter(part: Part, offset: bigint, message: KafkaMessage, reason: string, detail: string): void {
    const topic = this.source.deadLetterTopic
    if (topic === undefined) return
    const headers: IHeaders = {}
    for (const [name, value] of Object.entries(message.headers ?? {})) if (value !== undefined) headers[name] = value
    headers[DEAD_LETTER_HEADERS.reason] = reason
    headers[DEAD_LETTER_HEADERS.detail] = detail.slice(0, 2000)
    headers[DEAD_LETTER_HEADERS.topic] = part.topic
    headers[DEAD_LETTER_HEADERS.partition] = String(part.partition)
    headers[DEAD_LETTER_HEADERS.offset] = offset.toString()
    this.deadLetters.push({key: message.key, value: message.value, headers})
    this.deadLetterFlush ??= this.flushDeadLetters().finally(() => (this.deadLetterFlush = undefined))
  }

  private async flushDeadLetters(): Promise<void> {
    try {
      if (!this.producer) {
        this.producer = this.client!.kafka.producer({allowAutoTopicCreation: false})
        await this.producer.connect()
      }
      while (this.deadLetters.length > 0) {
        const messages = this.deadLetters.splice(0)
        await this.producer.send({topic: this.source.deadLetterTopic!, messages, acks: -1})
      }
    } catch (error) {
      this.deadLetterError ??= error
    }
  }

  async checkpoint(): Promise<SourceCheckpoints> {
    await this.settleRebalance()
    this.committing = true
    // Dead letters first: once the manifest moves past a rejected message it is never seen again.
    while (this.deadLetterFlush) await this.deadLetterFlush
    if (this.deadLetterError !== undefined) {
      const error = this.deadLetterError
      this.deadLetterError = undefined
      throw this.client!.failed(error)
    }
    // Only the partitions this member consumes: the commit merges them into the latest manifest,
    // whose other partitions are other members' (or were recorded before and stay as they are).
    this.snapshot = []
    const topics: Record<string, Record<string, string>> = {}
    const claims: Record<string, Record<string, string | null>> = {}
    for (const part of this.parts.values()) {
      if (!part.assigned || !part.baseKnown) continue
      this.snapshot.push({part, epoch: part.epoch, offset: part.settled})
      const position = part.claim !== undefined && part.claim > part.settled ? part.claim : part.settled
      ;(topics[part.topic] ??= {})[String(part.partition)] = position.toString()
      ;(claims[part.topic] ??= {})[String(part.partition)] = part.claim === undefined ? null : part.claim.toString()
    }
    this.snapshotClaims = {kafka: {[this.source.groupId]: claims}}
    return {kafka: {[this.source.groupId]: topics}}
  }

  claims(): SourceClaims {
    return this.snapshotClaims
  }

  /**
   * Another member recorded these partitions since this one read them: a previous owner's commit
   * that landed after this member took a partition over, or a new owner's (this member is a zombie
   * that has not heard of the rebalance yet). Every item of theirs handed out is taken back, and
   * they start again at the recorded position: whichever member's commit then lands first for a
   * range, the other's claim no longer holds and it takes that range back in turn.
   */
  resync(moved: readonly MovedPartition[]): void {
    let withdrawn = false
    for (const m of moved) {
      if (m.group !== this.source.groupId || m.recorded === null) continue
      const part = this.parts.get(key(m.topic, Number(m.partition)))
      if (!part) continue
      const position = BigInt(m.recorded)
      part.epoch++
      part.pending = 0
      part.claim = position
      part.delivered = position
      part.settled = position
      part.durable = position
      for (let i = this.queue.length - 1; i >= 0; i--) {
        const entry = this.queue[i]!
        if (entry.part === part) {
          this.queue.splice(i, 1)
          this.release(entry)
        }
      }
      withdrawn = true
      if (part.assigned) {
        part.resyncTo = position
        part.resyncSeeks = 0
        this.consumer?.seek({topic: part.topic, partition: part.partition, offset: position.toString()})
      }
    }
    if (!withdrawn) return
    this.ctx.onWithdrawn?.()
    // A partition paused as done (default mode) is not done any more: fetch it again.
    this.applyPause()
    this.wake()
  }

  async committed(checkpoint: SourceCheckpoints): Promise<void> {
    const commits: Array<{topic: string; partition: number; offset: string}> = []
    const snapshot = this.snapshot
    this.snapshot = []
    const recorded = checkpoint.kafka?.[this.source.groupId]
    for (const {part, epoch, offset} of snapshot) {
      if (part.epoch !== epoch) continue
      // What the manifest now holds for the partition: the claim of this member's next commit.
      const value = recorded?.[part.topic]?.[String(part.partition)]
      part.claim = value === undefined ? undefined : BigInt(value)
      part.durable = max(part.durable, offset)
    }
    // The manifest holds the commit: an assignment that came meanwhile takes effect now, before the
    // group's offsets are committed for the partitions still ours.
    this.committing = false
    const deferred = this.deferredAssignment
    this.deferredAssignment = undefined
    if (deferred) this.assign(deferred.assignment, deferred.memberId)
    this.assignmentApplied()
    for (const {part, epoch, offset} of snapshot) {
      if (part.epoch === epoch && part.assigned && offset > part.committedKafka) commits.push({topic: part.topic, partition: part.partition, offset: offset.toString()})
    }
    if (commits.length === 0 || !this.consumer) return
    try {
      await this.consumer.commitOffsets(commits)
      for (const c of commits) {
        const part = this.parts.get(key(c.topic, c.partition))!
        part.committedKafka = max(part.committedKafka, BigInt(c.offset))
      }
    } catch (error) {
      // The manifest already holds these positions, so a redelivery is recognised and skipped.
      this.ctx.observer?.warn?.(`committing Kafka offsets failed (the next run skips what the dataset holds): ${describe(error)}`)
    }
  }

  private assignmentApplied(): void {
    this.assignmentPending?.end()
    this.assignmentPending = undefined
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.rebalanceEnded()
    this.assignmentApplied()
    this.wake()
    const steps: Array<() => Promise<void> | undefined> = [
      () => this.consumer?.disconnect(),
      () => this.producer?.disconnect(),
      () => this.admin?.disconnect(),
    ]
    for (const step of steps) await Promise.resolve(step()).catch(() => {})
  }
}

/** Opens a kafka source; nothing connects until it is iterated. */
export function openKafkaSource(source: KafkaSourceConfig, ctx: SourceContext): SourceStream {
  return new KafkaSourceStream(source, ctx)
}
