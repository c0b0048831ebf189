// A Kafka topic ingested end to end with bad messages, written once and run against the in-repo broker
// (test/lib/data/kafka-ingest.test.ts) and a real Kafka (test/peers/kafka-ingest.test.ts): corrupt,
// unlabelled and oversized messages go to the quarantine and, with their key, value and headers and
// why and where from, to the dead-letter topic; a duplicate is counted; the manifest and the group
// both record each partition's end; a second run does nothing and writes no dead letter again.
import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import type {Kafka} from 'kafkajs'
import {runIngest, type IngestProgress} from '../../src/lib/data/ingest.js'
import {readManifest} from '../../src/lib/data/store.js'
import {DEAD_LETTER_HEADERS} from '../../src/lib/data/sources/kafka.js'
import {createTopics, digitMessage, kafkaConfig, produce, storedKeys, type Digit, type KafkaReads} from '../support/kafka-fixtures.js'

export interface DeadLetterSetup {
  kafka: Kafka
  brokers: string[]
  /** Workspace of the ingest (its store goes to <ws>/store), a fresh topic, dead-letter topic and group. */
  ws: string
  topic: string
  dead: string
  group: string
  /** At least 60 digits. */
  digits: Digit[]
  reads: KafkaReads
}

export async function deadLettersEndToEnd(s: DeadLetterSetup): Promise<void> {
  const {kafka, topic, dead, group, ws, reads} = s
  await createTopics(kafka, [[topic, 3], [dead, 1]])
  const good = s.digits.slice(0, 60)
  const corrupt = {value: good[0]!.png.subarray(0, 60), headers: {label: '7', trace: 'abc'}}
  const unlabelled = {value: good[1]!.png, headers: {other: 'x'}}
  const oversized = {value: Buffer.concat([good[3]!.png, Buffer.alloc(4000)]), headers: {label: '1'}}
  await produce(kafka, topic, [...good.map((d) => digitMessage(d)), corrupt, unlabelled, oversized, digitMessage(good[2]!)])

  const progress: IngestProgress[] = []
  const config = kafkaConfig({brokers: s.brokers, topics: [topic], groupId: group, deadLetterTopic: dead}, {maxFileBytes: 2000})
  // On a new real cluster this is the first group: the broker creates its offsets topic now and
  // answers NOT_COORDINATOR until it is loaded (the in-repo broker never does).
  const summary = await runIngest({config, baseDir: ws, onProgress: (p) => progress.push(p)})
  assert.deepEqual([summary.accepted, summary.rejected, summary.duplicates], [60, 3, 1])
  assert.deepEqual(summary.rejectedByReason, {corrupt: 1, 'no-label': 1, 'too-large': 1})
  assert.equal(summary.total, 60)
  assert.equal(progress.at(-1)!.seen, 64)

  const storeDir = path.join(ws, 'store')
  assert.deepEqual(await storedKeys(storeDir), new Map(good.map((d) => [d.key, d.label])))

  // The manifest records each partition's next offset, and Kafka got the same, after it.
  const manifest = await readManifest(storeDir)
  const ends = await reads.endOffsets(topic, 3)
  assert.deepEqual(manifest.sources?.kafka?.[group]?.[topic], Object.fromEntries(ends.map((o, p) => [String(p), String(o)])))
  assert.deepEqual(await reads.committed(group, topic, 3), ends)

  const quarantine = (await readFile(path.join(storeDir, 'quarantine.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as {reason: string; origin: string})
  assert.deepEqual(quarantine.map((q) => q.reason).sort(), ['corrupt', 'no-label', 'too-large'])
  for (const q of quarantine) assert.match(q.origin, new RegExp(`^kafka:${topic}/\\d/\\d+$`))

  // Dead letters: the original key, value and headers, plus why and where from.
  const letters = await reads.records(dead, 3)
  assert.equal(letters.length, 3)
  const byReason = new Map(letters.map((r) => [r.headers[DEAD_LETTER_HEADERS.reason], r]))
  assert.deepEqual([...byReason.keys()].sort(), ['corrupt', 'no-label', 'too-large'])
  const c = byReason.get('corrupt')!
  assert.deepEqual(c.value, corrupt.value)
  assert.equal(c.headers.trace, 'abc')
  assert.equal(c.headers[DEAD_LETTER_HEADERS.topic], topic)
  assert.deepEqual(byReason.get('no-label')!.value, unlabelled.value)
  const origin = quarantine.find((q) => q.reason === 'corrupt')!.origin
  assert.equal(`kafka:${topic}/${c.headers[DEAD_LETTER_HEADERS.partition]}/${c.headers[DEAD_LETTER_HEADERS.offset]}`, origin)

  // A second run starts at the committed offsets: nothing to do, nothing new.
  const again = await runIngest({config, baseDir: ws})
  assert.deepEqual([again.accepted, again.rejected, again.duplicates, again.datasetVersion], [0, 0, 0, manifest.version])
  assert.deepEqual(await reads.endOffsets(dead, 1), [3], 'no dead letter written twice')
}
