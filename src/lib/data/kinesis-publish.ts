// Publishes a class-folder tree to a Kinesis data stream in the format the kinesis source reads by
// default (format image): each record is a JSON envelope {label, image (base64), name}, its partition
// key the file's path under the folder (so records spread over the shards). PutRecords answers per
// record; throttled ones are sent again, in order of the folder.
import path from 'node:path'
import type {PutRecordsRequestEntry} from '@aws-sdk/client-kinesis'
import {UserError} from '../errors.js'
import {kinesisClient, kinesisError, MAX_RECORD_BYTES, type KinesisEnvelope} from './sources/kinesis.js'
import {openFolderSource} from './sources/folder.js'

export interface KinesisPublishOptions {
  folder: string
  stream: string
  /** Create the stream with this many shards when it does not exist (else a missing stream is an error). */
  shards?: number
  onProgress?: (published: number) => void
  signal?: AbortSignal
}

export interface KinesisPublishSummary {
  stream: string
  published: number
  bytes: number
  classes: number
  /** Files directly in the folder, which have no class folder. */
  skipped: number
  /** Files too large for one Kinesis record (1 MiB with the envelope). */
  tooLarge: number
  recordsPerSec: number
}

/** PutRecords takes at most 500 records and 5 MiB a request. */
const MAX_BATCH_RECORDS = 500
const MAX_BATCH_BYTES = 5 * 1024 * 1024 - 64 * 1024

export async function publishFolderToKinesis(options: KinesisPublishOptions): Promise<KinesisPublishSummary> {
  const {stream} = options
  const folder = path.resolve(options.folder)
  const sdk = await import('@aws-sdk/client-kinesis')
  const {client, check} = await kinesisClient()
  const started = performance.now()
  let published = 0
  let bytes = 0
  let skipped = 0
  let tooLarge = 0
  const classes = new Set<string>()
  try {
    await check()
    try {
      await client.send(new sdk.DescribeStreamSummaryCommand({StreamName: stream}))
    } catch (error) {
      if ((error as {name?: string}).name !== 'ResourceNotFoundException' || options.shards === undefined) {
        const failure = kinesisError(error, stream, 'publish to')
        if (failure instanceof UserError && failure.code === 'KINESIS_STREAM_NOT_FOUND') failure.suggestions.unshift('Pass --shards N to create it.')
        throw failure
      }
      await client.send(new sdk.CreateStreamCommand({StreamName: stream, ShardCount: options.shards}))
      await sdk.waitUntilStreamExists({client, maxWaitTime: 120, minDelay: 1, maxDelay: 5}, {StreamName: stream})
    }
    let batch: PutRecordsRequestEntry[] = []
    let batchBytes = 0
    const send = async () => {
      let entries = batch
      batch = []
      batchBytes = 0
      for (let attempt = 0; entries.length > 0; attempt++) {
        let answer
        try {
          answer = await client.send(new sdk.PutRecordsCommand({StreamName: stream, Records: entries}))
        } catch (error) {
          throw kinesisError(error, stream, 'publish to')
        }
        const failed = entries.filter((_, i) => answer.Records?.[i]?.ErrorCode)
        published += entries.length - failed.length
        options.onProgress?.(published)
        if (failed.length > 0 && attempt >= 10) {
          throw new UserError(`Kinesis refused ${failed.length} record(s) on ${stream}: ${answer.Records?.find((r) => r.ErrorCode)?.ErrorMessage}`, {
            code: 'KINESIS_UNAVAILABLE',
            exit: 'service',
            suggestions: ['The stream is over its write throughput: add shards, or publish again later (records already published stay).'],
          })
        }
        entries = failed
        if (entries.length > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 100 * 2 ** attempt)))
      }
    }
    const items = openFolderSource({type: 'folder', path: folder}, {baseDir: folder, ...(options.signal ? {signal: options.signal} : {})})
    for await (const item of items) {
      if (item.label === undefined) {
        skipped++
        continue
      }
      const name = path.relative(folder, item.origin).split(path.sep).join('/')
      const image = await item.read()
      const envelope: KinesisEnvelope = {label: item.label, image: image.toString('base64'), name}
      const data = Buffer.from(JSON.stringify(envelope))
      const partitionKey = name.slice(-256)
      if (data.length + Buffer.byteLength(partitionKey) > MAX_RECORD_BYTES) {
        tooLarge++
        continue
      }
      classes.add(item.label)
      if (batch.length >= MAX_BATCH_RECORDS || batchBytes + data.length > MAX_BATCH_BYTES) await send()
      batch.push({Data: data, PartitionKey: partitionKey})
      batchBytes += data.length + partitionKey.length
      bytes += image.length
    }
    await send()
  } finally {
    client.destroy()
  }
  const seconds = (performance.now() - started) / 1000
  return {stream, published, bytes, classes: classes.size, skipped, tooLarge, recordsPerSec: seconds > 0 ? published / seconds : 0}
}
