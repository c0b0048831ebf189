// Exactly-once under crashes, written once and run on each streaming source: the in-repo Kafka broker
// (test/slow/kafka-kill.test.ts), a real Kafka (test/peers/kafka-kill.test.ts) and Kinesis on moto
// (test/slow/aws/kinesis-kill.test.ts). `ml ingest --follow` is killed with SIGKILL at seeded random
// moments while a producer writes N digits; after one clean run the dataset holds each digit exactly
// once and nothing is quarantined. Each source then checks where its positions ended. The pieces the
// consumer-group scenario (test/slow/ingest-group.test.ts) shares are exported too.
import assert from 'node:assert/strict'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import type {Kafka} from 'kafkajs'
import seedrandom from 'seedrandom'
import {stringify} from 'yaml'
import {readManifest} from '../../src/lib/data/store.js'
import type {DatasetManifest} from '../../src/lib/data/types.js'
import {runJson, startCli} from '../support/cli.js'
import {committedOffsets, endOffsets} from '../support/kafka-admin.js'
import {digitMessage, mnistDigits, produce, storedKeys, type Digit} from '../support/kafka-fixtures.js'

/** `count` MNIST digits from `start`, asserted distinct: a digit stored twice cannot hide behind a twin. */
export async function distinctDigits(count: number, start: number): Promise<Digit[]> {
  const digits = await mnistDigits(count, start)
  assert.equal(new Set(digits.map((d) => d.key)).size, count, 'the fixture digits are distinct')
  return digits
}

/** Writes <dir>/ml.yaml: one streaming source, 28x28 grey digits into <dir>/store; returns its path. */
export async function writeStreamConfig(dir: string, source: Record<string, unknown>, shardSize: number): Promise<string> {
  const config = path.join(dir, 'ml.yaml')
  await writeFile(
    config,
    stringify({
      data: {
        sources: [source],
        image: {width: 28, height: 28, channels: 1},
        store: 'store',
        // Small shards and (through the source's rollIntervalMs) frequent commits, so that kills
        // land between and during them.
        shardSize,
        concurrency: 2,
      },
    }),
  )
  return config
}

/** The store holds each of `digits` exactly once under its label, and nothing was quarantined. */
export async function assertStoredOnce(storeDir: string, digits: Digit[]): Promise<DatasetManifest> {
  const manifest = await readManifest(storeDir)
  const stored = await storedKeys(storeDir)
  assert.equal(manifest.total, digits.length, `total ${manifest.total}`)
  assert.equal(stored.size, digits.length)
  assert.deepEqual(stored, new Map(digits.map((d) => [d.key, d.label])))
  const quarantine = await readFile(path.join(storeDir, 'quarantine.jsonl'), 'utf8').catch(() => '')
  assert.equal(quarantine.trim(), '', 'nothing quarantined')
  return manifest
}

/** The version of the store's manifest, 0 before the first commit. */
export const manifestVersion = (storeDir: string): Promise<number> => readManifest(storeDir).then((m) => m.version, () => 0)

/** A stream the scenario writes to and ingests from. */
export interface KillFeed {
  /** The `data.sources` entry of the ingest. */
  source: Record<string, unknown>
  /** Writes a batch of digits (10 at a time) to the stream. */
  put(digits: Digit[]): Promise<void>
  /** What only this source shows once everything is stored: where its positions ended. */
  atEnd(manifest: DatasetManifest): Promise<void>
}

export interface KillPlan {
  /** Workspace: ml.yaml and the store go here. */
  dir: string
  count: number
  /** Where in the MNIST training set the digits start (distinct ranges per test file). */
  digitsFrom: number
  rounds: number
  seed: string
  /** Each round is killed after [from, to) ms, drawn from the seeded generator. */
  killWindowMs: [number, number]
  shardSize: number
  /** Environment and working directory of the `ml` processes. */
  cli?: {env?: NodeJS.ProcessEnv; cwd?: string}
}

export async function killAndResume(feed: KillFeed, plan: KillPlan): Promise<void> {
  const rng = seedrandom(plan.seed)
  const digits = await distinctDigits(plan.count, plan.digitsFrom)
  const config = await writeStreamConfig(plan.dir, feed.source, plan.shardSize)
  const storeDir = path.join(plan.dir, 'store')
  const [from, to] = plan.killWindowMs

  const perRound = Math.ceil(plan.count / plan.rounds)
  const versions: number[] = []
  for (let round = 0; round < plan.rounds; round++) {
    const {child, done} = startCli(['ingest', '--follow', '--config', config], plan.cli)
    // The producer writes this round's share in small requests while the ingest runs.
    const share = digits.slice(round * perRound, (round + 1) * perRound)
    const producing = (async () => {
      for (let i = 0; i < share.length; i += 10) await feed.put(share.slice(i, i + 10))
    })()
    // The kill lands at a seeded moment: the point of the test, not a wait for something.
    await new Promise((resolve) => setTimeout(resolve, from + Math.floor(rng() * (to - from))))
    child.kill('SIGKILL')
    const result = await done
    assert.equal(result.signal, 'SIGKILL', `round ${round} ended by itself: ${result.stderr}`)
    await producing
    versions.push(await manifestVersion(storeDir))
  }

  // One clean run to catch up with whatever the last kill left.
  const final = await runJson<{accepted: number}>(['ingest', '--config', config], plan.cli)
  assert.equal(final.code, 0, final.stderr)

  const manifest = await assertStoredOnce(storeDir, digits)
  await feed.atEnd(manifest)
  // Progress was made across the kills, not only by the final run.
  console.log(`manifest versions after each kill: ${versions.join(' ')}; final run accepted ${final.json.accepted}`)
  assert.ok(versions.at(-1)! > 1, 'the killed runs committed something')
}

/** The Kafka runs of the scenario (in-repo broker and real Kafka): one topic of 4 partitions, one group. */
export const KAFKA_KILL = {count: 600, rounds: 12, digitsFrom: 2000, shardSize: 20, topic: 'digits', partitions: 4, group: 'kill-test'} as const

/** The scenario on a Kafka broker at `brokers` where KAFKA_KILL's topic exists; kills fall in `killWindowMs`. */
export async function kafkaKillAndResume(kafka: Kafka, brokers: string, dir: string, options: {seed: string; killWindowMs: [number, number]}): Promise<void> {
  const {topic, group, ...plan} = KAFKA_KILL
  await killAndResume(kafkaFeed(kafka, brokers, topic, group), {...plan, ...options, dir})
}

/**
 * A Kafka topic as the stream: a short session so that a killed member's partitions move on quickly,
 * commits every 100 ms. At the end the group's offsets and the manifest's both stand at the end of
 * every partition.
 */
export function kafkaFeed(kafka: Kafka, brokers: string, topic: string, group: string): KillFeed {
  return {
    source: {type: 'kafka', brokers: [brokers], topics: [topic], groupId: group, sessionTimeoutMs: 2000, rollIntervalMs: 100},
    put: (digits) => produce(kafka, topic, digits.map((d) => digitMessage(d))),
    async atEnd(manifest) {
      const ends = await endOffsets(kafka, topic)
      assert.deepEqual(await committedOffsets(kafka, group, topic), ends, 'group offsets at the end of the topic')
      assert.deepEqual(manifest.sources?.kafka?.[group]?.[topic], Object.fromEntries(ends.map((o, p) => [String(p), String(o)])))
    },
  }
}
