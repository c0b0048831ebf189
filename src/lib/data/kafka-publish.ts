// Publishes a class-folder tree to a Kafka topic in the format the kafka source reads by default:
// value = the file's bytes, header `label` = its class folder, key = its path under the folder.
import path from 'node:path'
import type {Message} from 'kafkajs'
import {UserError} from '../errors.js'
import {createKafka, type KafkaConnection, type KafkaOrigin} from './kafka-client.js'
import {openFolderSource} from './sources/folder.js'

export interface PublishOptions {
  folder: string
  topic: string
  connection: KafkaConnection
  /** Where the connection settings came from: the config entry errors name, and the folder relative ssl files are resolved against. */
  origin?: KafkaOrigin
  /** Header carrying the class name (default `label`). */
  labelHeader?: string
  /** Create the topic with this many partitions when it does not exist (else a missing topic is an error). */
  partitions?: number
  /** Messages are sent in requests of about this many bytes (default 900 KiB, under Kafka's 1 MiB default limit). */
  batchBytes?: number
  /** Files read ahead of the producer. */
  readAhead?: number
  onProgress?: (published: number) => void
  signal?: AbortSignal
}

export interface PublishSummary {
  topic: string
  published: number
  bytes: number
  classes: number
  /** Files directly in the folder, which have no class folder. */
  skipped: number
  messagesPerSec: number
}

/** Reads files ahead of the sender, in folder order, with at most `limit` reads in flight. */
async function* readAhead<T extends {read(): Promise<Buffer>}>(items: AsyncIterable<T>, limit: number): AsyncGenerator<{item: T; bytes: Buffer}> {
  const pending: Array<Promise<{item: T; bytes: Buffer}>> = []
  for await (const item of items) {
    pending.push(item.read().then((bytes) => ({item, bytes})))
    if (pending.length >= limit) yield await pending.shift()!
  }
  while (pending.length > 0) yield await pending.shift()!
}

export async function publishFolder(options: PublishOptions): Promise<PublishSummary> {
  const {topic, connection} = options
  const labelHeader = options.labelHeader ?? 'label'
  const batchBytes = options.batchBytes ?? 900 * 1024
  const folder = path.resolve(options.folder)
  // ssl and sasl come only from the config's first kafka source (publish has no flags for them).
  const client = await createKafka(connection, options.origin ?? {key: '--brokers'}, 'ml-publish')
  const admin = client.kafka.admin()
  const producer = client.kafka.producer({allowAutoTopicCreation: false})
  const started = performance.now()
  let published = 0
  let bytes = 0
  let skipped = 0
  const classes = new Set<string>()
  try {
    try {
      await admin.connect()
      const exists = (await admin.listTopics()).includes(topic)
      if (!exists && options.partitions === undefined) {
        throw new UserError(`topic ${topic} does not exist on ${connection.brokers.join(', ')}`, {
          code: 'TOPIC_NOT_FOUND',
          exit: 'data',
          suggestions: ['Pass --partitions N to create it, or create it with your Kafka tools.'],
        })
      }
      if (!exists) await admin.createTopics({topics: [{topic, numPartitions: options.partitions!}], waitForLeaders: true})
      await producer.connect()
    } catch (error) {
      throw client.failed(error)
    }
    let batch: Message[] = []
    let batchSize = 0
    const send = async () => {
      if (batch.length === 0) return
      const messages = batch
      batch = []
      batchSize = 0
      try {
        await producer.send({topic, messages, acks: -1})
      } catch (error) {
        throw client.failed(error)
      }
      published += messages.length
      options.onProgress?.(published)
    }
    const items = openFolderSource({type: 'folder', path: folder}, {baseDir: folder, ...(options.signal ? {signal: options.signal} : {})})
    for await (const {item, bytes: value} of readAhead(items, options.readAhead ?? 16)) {
      if (item.label === undefined) {
        skipped++
        continue
      }
      classes.add(item.label)
      if (batchSize + value.length > batchBytes) await send()
      batch.push({key: path.relative(folder, item.origin).split(path.sep).join('/'), value, headers: {[labelHeader]: item.label}})
      batchSize += value.length
      bytes += value.length
    }
    await send()
  } finally {
    await producer.disconnect().catch(() => {})
    await admin.disconnect().catch(() => {})
  }
  const seconds = (performance.now() - started) / 1000
  return {topic, published, bytes, classes: classes.size, skipped, messagesPerSec: seconds > 0 ? published / seconds : 0}
}
