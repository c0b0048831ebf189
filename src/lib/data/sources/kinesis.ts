// The kinesis source: records of an Amazon Kinesis data stream become SourceItems, shard by shard.
// Kinesis keeps no consumer positions of its own (the KCL keeps them in DynamoDB): here the dataset
// manifest is the checkpoint store. checkpoint() gives, per shard, the sequence number of the last
// record ingest has settled; ingest commits the manifest holding it, and the next run resumes each
// shard AFTER_SEQUENCE_NUMBER it. A record is therefore stored exactly once: a crash before a commit
// re-reads what that commit would have covered, a crash after it resumes past it.
// Resharding: a shard that was split or merged ends (GetRecords returns no next iterator); once read
// to its end it is checkpointed as closed, and its children (ParentShardId / AdjacentParentShardId)
// are read from their start only after every parent has been read to its end, as the KCL does, so
// records of one partition key stay in order across a reshard.
import type {KinesisClient, Shard} from '@aws-sdk/client-kinesis'
import type {KinesisSourceConfig} from '../../config/schema.js'
import {sleep} from '../../abortable.js'
import {awsSettingsFromEnv, clientOptions, credentialCheck, isAuthError, statusOf} from '../../cloud/aws.js'
import {UserError} from '../../errors.js'
import type {SourceCheckpoints} from '../types.js'
import type {SourceContext, SourceItem, SourceStream} from './types.js'

/** Largest record Kinesis accepts (data plus partition key). */
export const MAX_RECORD_BYTES = 1024 * 1024

/** The envelope of format image: what `ml ingest publish --to kinesis` writes. */
export interface KinesisEnvelope {
  label: string
  /** The image file's bytes, base64. */
  image: string
  /** Where the image came from (its path under the published folder). */
  name?: string
}

/** What a dead-lettered record carries (Kinesis records have no headers): the reason, where it came from, and its data. */
export interface KinesisDeadLetter {
  reason: string
  detail: string
  stream: string
  shardId: string
  sequenceNumber: string
  partitionKey: string
  /** The original record's data, base64; left out (dataOmitted) when the letter would exceed a record's size. */
  data?: string
  dataOmitted?: boolean
}

/** Per shard of a stream: the last settled sequence number, and whether the shard was read to its end (closed by a reshard). */
export type KinesisShardCheckpoint = {sequenceNumber?: string; closed?: boolean}

const pollMs = () => Number(process.env.ML_KINESIS_POLL_MS) || 1000

export function kinesisSettings() {
  return awsSettingsFromEnv('kinesis')
}

/** A Kinesis client on the environment's settings, with its credentials checked once before use. */
export async function kinesisClient(): Promise<{client: KinesisClient; check: () => Promise<void>}> {
  const {KinesisClient} = await import('@aws-sdk/client-kinesis')
  const settings = kinesisSettings()
  // The Kinesis client speaks HTTP/2 by default (negotiated over TLS); a plain-http endpoint (an
  // emulator such as moto or LocalStack) gets HTTP/1.1, which is what those serve.
  const plain = settings.endpoint?.startsWith('http://') === true
  const requestHandler = plain ? new (await import('@smithy/node-http-handler')).NodeHttpHandler() : undefined
  const client = new KinesisClient({...clientOptions(settings), ...(requestHandler ? {requestHandler} : {})})
  return {client, check: credentialCheck('Kinesis', client)}
}

/** Turns an SDK error into a UserError naming the stream and what to do. */
export function kinesisError(error: unknown, stream: string, action: string, key?: string): Error {
  if (error instanceof UserError) return error
  const name = (error as {name?: string} | undefined)?.name ?? ''
  const message = (error as Error | undefined)?.message ?? String(error)
  if (isAuthError(error)) return new UserError(`no usable AWS credentials for Kinesis: ${message}`, {code: 'AWS_AUTH', exit: 'service', cause: error})
  if (name === 'ResourceNotFoundException') {
    return new UserError(`Kinesis stream ${stream} does not exist (${action})`, {
      code: 'KINESIS_STREAM_NOT_FOUND',
      exit: 'usage',
      cause: error,
      ...(key ? {details: {key}} : {}),
      suggestions: ['Check the stream name and region (AWS_REGION), or create it: `aws kinesis create-stream --stream-name <name> --shard-count 1`.'],
    })
  }
  if (name === 'AccessDeniedException' || statusOf(error) === 403) {
    return new UserError(`permission denied to ${action} Kinesis stream ${stream}: ${message}`, {
      code: 'KINESIS_FORBIDDEN',
      exit: 'service',
      cause: error,
      suggestions: ['Allow kinesis:ListShards, kinesis:GetShardIterator, kinesis:GetRecords (and kinesis:PutRecords for a dead-letter stream) to the identity in use.'],
    })
  }
  return new UserError(`Kinesis failed to ${action} ${stream}: ${message}`, {
    code: 'KINESIS_UNAVAILABLE',
    exit: 'service',
    cause: error,
    suggestions: ['Retried with backoff already; check connectivity (and ML_KINESIS_ENDPOINT when set), then run the command again: nothing committed is lost.'],
  })
}

interface ShardState {
  id: string
  parents: string[]
  /** Sequence number of the last record handed out. */
  delivered?: string
  /** Sequence number of the last record ingest settled; what the checkpoint records. */
  settled?: string
  /** Items handed out and not yet settled. */
  pending: number
  iterator?: string
  /** GetRecords returned no next iterator: every record of the shard was handed out. */
  ended: boolean
  /** Default mode: caught up with the stream's tip (an empty answer 0 ms behind). */
  caughtUp: boolean
  /** Already closed in the last manifest: nothing to read. */
  doneBefore: boolean
  /** The listing gives the shard an ending sequence number: it was split or merged and takes no new records. */
  closedInListing: boolean
}

function configKey(ctx: SourceContext): string {
  return ctx.index === undefined ? 'data.sources[].stream' : `data.sources[${ctx.index}].stream`
}

/** Decodes a record into an image and its label, or a problem that quarantines it. */
function decode(source: KinesisSourceConfig, data: Uint8Array): {bytes: Buffer; label: string | undefined} | {problem: {reason: string; detail: string}} {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (source.format === 'fixed') return {bytes: buffer, label: source.label}
  let envelope: Partial<KinesisEnvelope>
  try {
    envelope = JSON.parse(buffer.toString('utf8')) as Partial<KinesisEnvelope>
  } catch {
    return {problem: {reason: 'malformed-record', detail: 'format image expects a JSON envelope {"label", "image" (base64)}'}}
  }
  if (typeof envelope !== 'object' || envelope === null || typeof envelope.image !== 'string') {
    return {problem: {reason: 'malformed-record', detail: 'the envelope has no "image" (base64 string)'}}
  }
  const label = typeof envelope.label === 'string' && envelope.label !== '' ? envelope.label : source.label
  return {bytes: Buffer.from(envelope.image, 'base64'), label}
}

export function openKinesisSource(source: KinesisSourceConfig, ctx: SourceContext): SourceStream {
  const stream = source.stream
  const previous = ctx.checkpoints?.kinesis?.[stream] ?? {}
  const shards = new Map<string, ShardState>()
  let clientPromise: Promise<{client: KinesisClient; check: () => Promise<void>}> | undefined
  const client = async () => {
    clientPromise ??= kinesisClient()
    const c = await clientPromise
    await c.check()
    return c.client
  }
  const sdk = () => import('@aws-sdk/client-kinesis')
  const deadLetters: Array<{letter: KinesisDeadLetter; partitionKey: string}> = []

  const listShards = async (): Promise<Shard[]> => {
    const {ListShardsCommand} = await sdk()
    const c = await client()
    const all: Shard[] = []
    let token: string | undefined
    try {
      do {
        const page = await c.send(new ListShardsCommand(token ? {NextToken: token} : {StreamName: stream}))
        all.push(...(page.Shards ?? []))
        token = page.NextToken
      } while (token)
    } catch (error) {
      throw kinesisError(error, stream, 'list the shards of', configKey(ctx))
    }
    return all
  }

  /** Adds shards not seen before; shards gone from the listing (past retention) are forgotten. */
  const discover = async () => {
    for (const shard of await listShards()) {
      const id = shard.ShardId!
      const closedInListing = shard.SequenceNumberRange?.EndingSequenceNumber !== undefined
      const known = shards.get(id)
      if (known) {
        known.closedInListing ||= closedInListing
        continue
      }
      const before = previous[id]
      shards.set(id, {
        id,
        parents: [shard.ParentShardId, shard.AdjacentParentShardId].filter((p): p is string => p !== undefined),
        ...(before?.sequenceNumber ? {delivered: before.sequenceNumber, settled: before.sequenceNumber} : {}),
        pending: 0,
        ended: before?.closed === true,
        caughtUp: before?.closed === true,
        doneBefore: before?.closed === true,
        closedInListing,
      })
    }
  }

  /** A shard may be read once every parent still listed was read to its end. */
  const ready = (shard: ShardState) => !shard.ended && shard.parents.every((p) => shards.get(p)?.ended ?? true)

  const iteratorFor = async (shard: ShardState): Promise<string | undefined> => {
    const {GetShardIteratorCommand} = await sdk()
    const c = await client()
    // A child of a known shard is read from its start (its records follow its parents'); a shard of
    // our own checkpoint continues after it; any other, per fromStart.
    const isChild = shard.parents.some((p) => shards.has(p) || previous[p] !== undefined)
    const position =
      shard.delivered !== undefined
        ? {ShardIteratorType: 'AFTER_SEQUENCE_NUMBER' as const, StartingSequenceNumber: shard.delivered}
        : {ShardIteratorType: source.fromStart || isChild ? ('TRIM_HORIZON' as const) : ('LATEST' as const)}
    try {
      const answer = await c.send(new GetShardIteratorCommand({StreamName: stream, ShardId: shard.id, ...position}))
      return answer.ShardIterator
    } catch (error) {
      throw kinesisError(error, stream, `get an iterator for shard ${shard.id} of`, configKey(ctx))
    }
  }

  const makeItem = (shard: ShardState, record: {SequenceNumber?: string; PartitionKey?: string; Data?: Uint8Array}): SourceItem => {
    const sequenceNumber = record.SequenceNumber!
    const data = record.Data ?? new Uint8Array()
    const decoded = decode(source, data)
    const origin = `kinesis:${stream}/${shard.id}/${sequenceNumber}`
    shard.pending++
    shard.delivered = sequenceNumber
    let settled = false
    const item: SourceItem = {
      origin,
      label: 'problem' in decoded ? undefined : decoded.label,
      size: 'problem' in decoded ? data.length : decoded.bytes.length,
      read: async () => ('problem' in decoded ? Buffer.alloc(0) : decoded.bytes),
      settle() {
        if (settled) return
        settled = true
        shard.pending--
        // Ingest settles items in source order, and a shard's items are handed out in order.
        shard.settled = sequenceNumber
      },
      reject(reason, detail) {
        if (source.deadLetterStream === undefined) return
        const letter: KinesisDeadLetter = {reason, detail, stream, shardId: shard.id, sequenceNumber, partitionKey: record.PartitionKey ?? ''}
        const full = JSON.stringify({...letter, data: Buffer.from(data).toString('base64')})
        deadLetters.push({letter: Buffer.byteLength(full) + 256 <= MAX_RECORD_BYTES ? {...letter, data: Buffer.from(data).toString('base64')} : {...letter, dataOmitted: true}, partitionKey: record.PartitionKey || shard.id})
      },
    }
    if ('problem' in decoded) item.problem = decoded.problem
    return item
  }

  async function* read(): AsyncGenerator<SourceItem> {
    const {GetRecordsCommand} = await sdk()
    await discover()
    for (;;) {
      if (ctx.signal?.aborted) return
      let progressed = false
      let resharded = false
      for (const shard of [...shards.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
        if (!ready(shard) || (!ctx.follow && shard.caughtUp)) continue
        if (ctx.signal?.aborted) return
        shard.iterator ??= await iteratorFor(shard)
        if (shard.iterator === undefined) {
          shard.ended = true
          resharded = true
          continue
        }
        const c = await client()
        let answer
        try {
          answer = await c.send(new GetRecordsCommand({ShardIterator: shard.iterator, Limit: source.maxRecordsPerCall}))
        } catch (error) {
          if ((error as {name?: string}).name === 'ExpiredIteratorException') {
            // Iterators live 5 minutes; continue after the last record handed out.
            shard.iterator = undefined
            continue
          }
          throw kinesisError(error, stream, `read shard ${shard.id} of`, configKey(ctx))
        }
        const records = answer.Records ?? []
        for (const record of records) yield makeItem(shard, record)
        if (records.length > 0) progressed = true
        shard.iterator = answer.NextShardIterator
        if (shard.iterator === undefined || shard.iterator === null) {
          // Closed by a split or merge, and read to its end: its children come next.
          shard.ended = true
          resharded = true
        } else if (records.length === 0 && (answer.MillisBehindLatest ?? 0) === 0) {
          shard.caughtUp = true
          // A closed shard read to the tip has nothing more. Kinesis then also answers without a next
          // iterator; some emulators (moto) never do, and this ends the shard there too.
          if (shard.closedInListing) {
            shard.ended = true
            resharded = true
          }
        } else {
          shard.caughtUp = false
        }
      }
      if (resharded) await discover()
      const open = [...shards.values()].filter((s) => !s.ended)
      if (!ctx.follow && open.every((s) => s.caughtUp || !ready(s)) && !resharded) {
        // Default mode ends once every readable shard is caught up (children of an unfinished
        // parent cannot be, and are left for the next run).
        return
      }
      if (!progressed && !resharded) {
        await sleep(pollMs(), ctx.signal)
        // In follow mode a reshard by someone else shows as a parent ending; new shards are also
        // picked up from time to time.
        if (ctx.follow) await discover()
      }
    }
  }

  const flushDeadLetters = async () => {
    if (deadLetters.length === 0 || source.deadLetterStream === undefined) return
    const {PutRecordsCommand} = await sdk()
    const c = await client()
    while (deadLetters.length > 0) {
      const batch = deadLetters.slice(0, 100)
      let entries = batch.map((d) => ({Data: Buffer.from(JSON.stringify(d.letter)), PartitionKey: d.partitionKey.slice(0, 256)}))
      // PutRecords succeeds per record; failed ones (throttled) are sent again.
      for (let attempt = 0; entries.length > 0; attempt++) {
        let answer
        try {
          answer = await c.send(new PutRecordsCommand({StreamName: source.deadLetterStream, Records: entries}))
        } catch (error) {
          throw kinesisError(error, source.deadLetterStream, 'put dead letters to')
        }
        const failed = entries.filter((_, i) => answer.Records?.[i]?.ErrorCode)
        if (failed.length > 0 && attempt >= 8) {
          throw new UserError(`Kinesis refused ${failed.length} dead letter(s) for ${source.deadLetterStream}: ${answer.Records?.find((r) => r.ErrorCode)?.ErrorMessage}`, {code: 'KINESIS_UNAVAILABLE', exit: 'service'})
        }
        entries = failed
        if (entries.length > 0) await sleep(Math.min(2000, 100 * 2 ** attempt), ctx.signal)
      }
      deadLetters.splice(0, batch.length)
    }
  }

  const generator = read()
  return {
    [Symbol.asyncIterator]: () => generator,
    async checkpoint(): Promise<SourceCheckpoints> {
      // Dead letters of settled records are in their stream before the manifest passes the records.
      await flushDeadLetters()
      const positions: Record<string, KinesisShardCheckpoint> = {...previous}
      for (const shard of shards.values()) {
        const closed = shard.ended && shard.pending === 0 && (shard.doneBefore || shard.settled === shard.delivered)
        if (shard.settled === undefined && !closed) continue
        positions[shard.id] = {...(shard.settled !== undefined ? {sequenceNumber: shard.settled} : {}), ...(closed ? {closed: true} : {})}
      }
      return {kinesis: {[stream]: positions}}
    },
    // The manifest is the only checkpoint store: nothing to acknowledge upstream.
    async committed() {},
    async close() {
      await generator.return(undefined)
      if (clientPromise) (await clientPromise).client.destroy()
    },
  }
}
