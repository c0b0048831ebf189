// A rebalance in the middle of a follow-mode Kafka ingest, written once and run against the in-repo
// broker (test/lib/data/kafka-ingest.test.ts) and a real Kafka (test/peers/kafka-ingest.test.ts): a
// second consumer B joins the group once ingest A has accepted 40 digits; A must drop the uncommitted
// work of the partitions it loses, so that nothing is lost or stored twice.
import assert from 'node:assert/strict'
import path from 'node:path'
import type {Consumer, Kafka} from 'kafkajs'
import {runIngest, type IngestProgress} from '../../src/lib/data/ingest.js'
import {FAST_CONSUMER} from '../support/kafka-client.js'
import {createTopics, digitMessage, kafkaConfig, produce, sha256, storedKeys, type Digit} from '../support/kafka-fixtures.js'

export interface RebalanceSetup {
  kafka: Kafka
  brokers: string[]
  /** Workspace of the ingest (its store goes to <ws>/store), a fresh topic and group. */
  ws: string
  topic: string
  group: string
  digits: Digit[]
  /** Consumers the test file disconnects after each test. */
  consumers: Consumer[]
  /** The end offset of each of the topic's 4 partitions. */
  endOffsets(): Promise<number[]>
  /** The group's committed offset of each of the topic's 4 partitions. */
  committed(): Promise<Array<number | undefined>>
}

export async function rebalanceLosesNothing(s: RebalanceSetup): Promise<void> {
  const {kafka, topic, group, ws} = s
  await createTopics(kafka, [[topic, 4]])
  const all = s.digits.slice(0, 240)
  await produce(kafka, topic, all.map((d, i) => ({...digitMessage(d), partition: i % 4})))
  const ends = await s.endOffsets()

  // Consumer B records what it gets and commits after every batch.
  const other: string[] = []
  let bAssigned: number[] = []
  const b = kafka.consumer({groupId: group, ...FAST_CONSUMER})
  s.consumers.push(b)
  b.on(b.events.GROUP_JOIN, (e) => {
    bAssigned = e.payload.memberAssignment[topic] ?? []
    checkB()
    checkAll()
  })
  const bPositions = new Map<number, number>()
  let bDone: () => void
  const bFinished = new Promise<void>((resolve) => (bDone = resolve))
  // The assignments A and B last heard of split the partitions between them: both know the latest
  // generation. Until then B may hold partitions A has not dropped yet, or (A's session expired
  // under load and the group went on without it) all of them, for a while.
  let aAssigned: number[] = []
  const settled = () => {
    const both = [...aAssigned, ...bAssigned]
    return both.length === 4 && new Set(both).size === 4
  }
  // B is done once it has consumed its partitions of the settled generation.
  const checkB = () => {
    if (settled() && bAssigned.length > 0 && bAssigned.every((p) => (bPositions.get(p) ?? 0) >= ends[p]!)) bDone()
  }
  // Everything is accounted for once what A holds (stored or buffered) and what B got add up, in a
  // settled generation: before A has dropped the work of the partitions it lost, the messages B
  // consumes from them are counted twice, and the sum could match while A still misses some of
  // its own.
  const checkAll = () => {
    if (bStarted && other.length > 0 && settled() && accepted + other.length === all.length) done()
  }

  const controller = new AbortController()
  let bStarted = false
  let done: () => void
  const allHandled = new Promise<void>((resolve) => (done = resolve))
  let accepted = 0
  const ingest = runIngest({
    // No commit can happen before the abort: the dropped work must be what was never committed.
    config: kafkaConfig({brokers: s.brokers, topics: [topic], groupId: group}, {shardSize: 10_000, concurrency: 2}),
    baseDir: ws,
    follow: true,
    rollIntervalMs: 3_600_000,
    signal: controller.signal,
    observer: {
      assigned: (assignment) => {
        aAssigned = assignment[topic] ?? []
        checkB()
        checkAll()
      },
    },
    onProgress: (p: IngestProgress) => {
      accepted = p.accepted
      if (!bStarted && p.accepted >= 40) {
        bStarted = true
        void (async () => {
          await b.connect()
          await b.subscribe({topic, fromBeginning: true})
          await b.run({
            eachMessage: async ({partition, message}) => {
              other.push(sha256(message.value!))
              bPositions.set(partition, Number(message.offset) + 1)
              checkB()
              checkAll()
            },
          })
        })()
      }
      checkAll()
    },
  })
  await bFinished
  const bFinal = bAssigned
  assert.ok(bFinal.length > 0 && bFinal.length < 4, `B got ${bFinal}`)
  await b.disconnect()
  // A takes B's partitions over: the sum is checked again once A has heard of it.
  bAssigned = []
  checkAll()
  const afterB = await s.committed()
  for (const p of bFinal) assert.equal(afterB[p], ends[p], 'B committed what it consumed')
  await allHandled
  controller.abort()
  const summary = await ingest
  assert.equal(summary.accepted + other.length, all.length)

  const stored = await storedKeys(path.join(ws, 'store'))
  assert.deepEqual(other.filter((k) => stored.has(k)), [], 'stored by both consumers')
  assert.equal(new Set(other).size, other.length, 'B got a message twice')
  assert.deepEqual(new Set([...stored.keys(), ...other]), new Set(all.map((d) => d.key)))
  assert.deepEqual(await s.committed(), ends)
}
