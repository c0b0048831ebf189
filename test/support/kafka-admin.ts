// Partition ends, a group's committed offsets and the records of a topic, asked through the admin API,
// so that one test reads them the same way from the in-repo broker and from a real Kafka.
import type {Kafka, KafkaMessage} from 'kafkajs'
import {FAST_CONSUMER} from './kafka-client.js'
import type {KafkaReads} from './kafka-fixtures.js'

/**
 * Runs `run` with a connected admin client. A retriable answer (a group coordinator still loading the
 * offsets topic of a new or restarted broker) is retried a few times: kafkajs's admin passes it on.
 */
export async function withAdmin<T>(kafka: Kafka, run: (admin: ReturnType<Kafka['admin']>) => Promise<T>): Promise<T> {
  const admin = kafka.admin()
  await admin.connect()
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        return await run(admin)
      } catch (error) {
        if (attempt >= 12 || (error as {retriable?: boolean}).retriable !== true) throw error
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** attempt)))
      }
    }
  } finally {
    await admin.disconnect()
  }
}

/** The high watermark of each partition, by partition number. */
export const endOffsets = (kafka: Kafka, topic: string): Promise<number[]> =>
  withAdmin(kafka, async (admin) => (await admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition).map((p) => Number(p.high)))

/** The group's committed offset of each partition (undefined: none). */
export const committedOffsets = (kafka: Kafka, group: string, topic: string): Promise<Array<number | undefined>> =>
  withAdmin(kafka, async (admin) => {
    const [offsets] = await admin.fetchOffsets({groupId: group, topics: [topic]})
    return offsets!.partitions.sort((a, b) => a.partition - b.partition).map((p) => (Number(p.offset) >= 0 ? Number(p.offset) : undefined))
  })

/** Every record of `topic` (all partitions), read from the beginning until `count` have arrived. */
export async function readRecords(kafka: Kafka, topic: string, count: number): Promise<KafkaMessage[]> {
  const consumer = kafka.consumer({groupId: `reader-${topic}-${Date.now()}`, ...FAST_CONSUMER})
  await consumer.connect()
  const out: KafkaMessage[] = []
  try {
    await consumer.subscribe({topic, fromBeginning: true})
    await new Promise<void>((resolve) => {
      void consumer.run({
        autoCommit: false,
        eachMessage: async ({message}) => {
          out.push(message)
          if (out.length >= count) resolve()
        },
      })
    })
  } finally {
    await consumer.disconnect()
  }
  return out
}

/** KafkaReads through the admin API and a consumer, for any broker. */
export function adminReads(kafka: Kafka): KafkaReads {
  return {
    endOffsets: (topic) => endOffsets(kafka, topic),
    committed: (group, topic) => committedOffsets(kafka, group, topic),
    records: async (topic, count) => (await readRecords(kafka, topic, count)).map((r) => ({value: r.value, headers: Object.fromEntries(Object.entries(r.headers ?? {}).map(([k, v]) => [k, v?.toString()]))})),
  }
}
