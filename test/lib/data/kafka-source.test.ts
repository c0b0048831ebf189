// The kafka source's bookkeeping between kafkajs and ingest, driven step by step: a consumer that
// rejoins the group (a new member id, after a broker restart or an expired session) while a commit is
// under way. The assignment waits for the commit; the new generation's first batches, which kafkajs
// fetches from the group's committed offsets at once, must wait with it.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import type {EachBatchPayload, KafkaMessage} from 'kafkajs'
import type {KafkaSourceConfig} from '../../../src/lib/config/schema.js'
import {KafkaSourceStream} from '../../../src/lib/data/sources/kafka.js'
import type {SourceCheckpoints, SourceItem} from '../../../src/lib/data/sources/types.js'
import {kafkaConfig} from '../../support/kafka-fixtures.js'

const TOPIC = 'digits'
const GROUP = 'g'

/** The private surface kafkajs drives (its events and eachBatch) and the consumer it calls back. */
interface Driven {
  consumer: {seek(): void; pause(): void; resume(): void; commitOffsets(c: unknown[]): Promise<void>; disconnect(): Promise<void>}
  assign(assignment: Record<string, number[]>, memberId: string): void
  onBatch(payload: EachBatchPayload): Promise<void>
  queue: Array<{offset: bigint; item: SourceItem}>
}

function stream(): {source: KafkaSourceStream; driven: Driven; commits: unknown[][]} {
  const config = kafkaConfig({brokers: ['127.0.0.1:9'], topics: [TOPIC], groupId: GROUP})
  const source = new KafkaSourceStream(config.data.sources[0] as KafkaSourceConfig, {baseDir: '.', follow: true})
  const driven = source as unknown as Driven
  const commits: unknown[][] = []
  driven.consumer = {seek() {}, pause() {}, resume() {}, commitOffsets: async (c) => void commits.push(c), disconnect: async () => {}}
  return {source, driven, commits}
}

/** A batch of partition 0 with offsets [from, to), and the offsets the source resolves in it. */
function batch(from: number, to: number): {payload: EachBatchPayload; resolved: number[]} {
  const resolved: number[] = []
  const messages = Array.from({length: to - from}, (_, i) => ({offset: String(from + i), key: Buffer.from('k'), value: Buffer.from([from + i]), headers: {label: '3'}}) as unknown as KafkaMessage)
  const payload = {batch: {topic: TOPIC, partition: 0, highWatermark: String(to), messages}, resolveOffset: (o: string) => void resolved.push(Number(o))} as unknown as EachBatchPayload
  return {payload, resolved}
}

const position = (offset: number): SourceCheckpoints => ({kafka: {[GROUP]: {[TOPIC]: {'0': String(offset)}}}})

describe('kafka source: a rejoin during a commit', () => {
  it('holds the new generation’s batches until its assignment takes effect, and hands out again what was not committed', async () => {
    const {source, driven, commits} = stream()
    driven.assign({[TOPIC]: [0]}, 'member-1')
    const first = batch(0, 10)
    await driven.onBatch(first.payload)
    assert.deepEqual(first.resolved, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    // Ingest has settled offsets 0-4; 5-9 are still in its hands when the commit starts.
    for (const entry of driven.queue.splice(0, 5)) entry.item.settle!()
    assert.deepEqual(await source.checkpoint(), position(5))

    // The member rejoins with a new id while the manifest is being written: the assignment waits.
    driven.assign({[TOPIC]: [0]}, 'member-2')
    // kafkajs fetches for the new generation from the group's committed offset (0 here).
    const again = batch(0, 10)
    let done = false
    const pending = driven.onBatch(again.payload).then(() => (done = true))
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(done, false, 'a batch of the new generation waits for its assignment')
    assert.deepEqual(again.resolved, [])

    await source.committed(position(5))
    await pending
    // 0-4 are in the manifest; 5-9, dropped with the old generation's work, are handed out again.
    assert.deepEqual(again.resolved, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert.deepEqual(driven.queue.map((e) => Number(e.offset)), [5, 6, 7, 8, 9])
    assert.deepEqual(commits, [], 'no offset is committed for a generation this member left')
    await source.close()
  })

  it('releases a waiting batch when the source closes', async () => {
    const {source, driven} = stream()
    driven.assign({[TOPIC]: [0]}, 'member-1')
    await source.checkpoint()
    driven.assign({[TOPIC]: [0]}, 'member-2')
    const waiting = batch(0, 3)
    const pending = driven.onBatch(waiting.payload)
    await source.close()
    await pending
    assert.deepEqual(waiting.resolved, [], 'nothing is taken once closed')
    assert.deepEqual(driven.queue, [])
  })
})
