// Fixtures for Kafka ingest tests: the in-repo broker with a client and a temp folder, real MNIST
// digits as PNG messages, a producer helper, configs for a kafka source, and a reader of what a
// dataset store holds (sha256 key -> class name).
import {createHash} from 'node:crypto'
import type {Kafka, Message} from 'kafkajs'
import {validateConfig} from '../../src/lib/config/load.js'
import type {MlConfig} from '../../src/lib/config/schema.js'
import {mnistPng, readMnist} from '../../src/lib/data/mnist.js'
import {loadSplit, readManifest} from '../../src/lib/data/store.js'
import {tempDir} from './fixtures.js'
import {KafkaBroker} from './kafka-broker.js'
import {kafkaLog, testKafka} from './kafka-client.js'

export interface Digit {
  png: Buffer
  label: string
  key: string
}

/** `count` real MNIST training digits from `start`, PNG-encoded, with their sha256 dedupe keys. */
export async function mnistDigits(count: number, start = 0): Promise<Digit[]> {
  const sample = await readMnist('train', start, count)
  const out: Digit[] = []
  for (let i = 0; i < sample.count; i++) {
    const png = await mnistPng(sample, i)
    out.push({png, label: String(sample.labels[i]), key: createHash('sha256').update(png).digest('hex')})
  }
  return out
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

/** Sends messages in requests of at most `per` messages (kafkajs sends one request per call). */
export async function produce(kafka: Kafka, topic: string, messages: Message[], per = 200): Promise<void> {
  const producer = kafka.producer({allowAutoTopicCreation: false})
  await producer.connect()
  try {
    for (let i = 0; i < messages.length; i += per) await producer.send({topic, messages: messages.slice(i, i + per), acks: -1})
  } finally {
    await producer.disconnect()
  }
}

export const digitMessage = (d: Digit, header = 'label'): Message => ({value: d.png, headers: {[header]: d.label}})

export async function createTopics(kafka: Kafka, topics: Array<[string, number]>): Promise<void> {
  const admin = kafka.admin()
  await admin.connect()
  try {
    await admin.createTopics({topics: topics.map(([topic, numPartitions]) => ({topic, numPartitions})), waitForLeaders: true})
  } finally {
    await admin.disconnect()
  }
}

/** A validated config with one kafka source (plus `source` overrides) and 28x28 grey images. */
export function kafkaConfig(source: Record<string, unknown>, data: Record<string, unknown> = {}): MlConfig {
  return validateConfig({
    data: {
      sources: [{type: 'kafka', sessionTimeoutMs: 6000, ...source}],
      store: 'store',
      image: {width: 28, height: 28, channels: 1},
      shardSize: 1000,
      concurrency: 4,
      ...data,
    },
  })
}

/** Every stored example: sha256 key -> class name (asserting that no key is stored twice). */
export async function storedKeys(storeDir: string): Promise<Map<string, string>> {
  const manifest = await readManifest(storeDir)
  const out = new Map<string, string>()
  for (const split of ['train', 'validation', 'test'] as const) {
    const decoded = await loadSplit(storeDir, split, manifest)
    decoded.keys.forEach((key, i) => {
      if (out.has(key)) throw new Error(`key ${key} stored twice`)
      out.set(key, manifest.classes[decoded.labels[i]!]!)
    })
  }
  return out
}

/** A record as a test reads it back: its value and its headers as strings. */
export interface ReadRecord {
  value: Buffer | null
  headers: Record<string, string | undefined>
}

/** What a scenario reads back from a broker, whichever it is. */
export interface KafkaReads {
  /** The end offset of each of a topic's `partitions`. */
  endOffsets(topic: string, partitions: number): Promise<number[]>
  /** The group's committed offset of each of the topic's `partitions` (undefined: none). */
  committed(group: string, topic: string, partitions: number): Promise<Array<number | undefined>>
  /** The first `count` records of a one-partition topic. */
  records(topic: string, count: number): Promise<ReadRecord[]>
}

/** KafkaReads straight from the in-repo broker's state. */
export function brokerReads(broker: KafkaBroker): KafkaReads {
  const each = <T>(partitions: number, read: (p: number) => T) => Array.from({length: partitions}, (_, p) => read(p))
  return {
    endOffsets: async (topic, partitions) => each(partitions, (p) => broker.highWatermark(topic, p)),
    committed: async (group, topic, partitions) => each(partitions, (p) => broker.committed(group, topic, p)),
    records: async (topic, count) =>
      broker
        .records(topic, 0)
        .slice(0, count)
        .map((r) => ({value: r.value, headers: Object.fromEntries(r.headers.map((h) => [h.key, h.value?.toString()]))})),
  }
}

/** What a test file of the in-repo broker works with; `close` stops the broker and removes the folder. */
export interface BrokerWorkspace {
  broker: KafkaBroker
  kafka: Kafka
  dir: string
  close(): Promise<void>
}

/**
 * The in-repo broker (topics are created by the tests, never on first use), a client of it, and a
 * temp folder named from `prefix`. When the test process has failed by `close`, the client's last log
 * lines are printed.
 */
export async function brokerWorkspace(prefix: string): Promise<BrokerWorkspace> {
  const broker = await KafkaBroker.create({autoCreateTopics: false})
  const {dir, cleanup} = await tempDir(prefix)
  return {
    broker,
    kafka: testKafka(broker.address),
    dir,
    async close() {
      await broker.stop()
      await cleanup()
      if (process.exitCode) console.error(kafkaLog.slice(-40).join('\n'))
    },
  }
}
