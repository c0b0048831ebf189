// Exactly-once under crashes: `ml ingest --follow` is killed with SIGKILL at seeded random moments,
// many times, while a producer writes N digits; the dataset must end with each digit exactly once.
import assert from 'node:assert/strict'
import {spawn, type ChildProcess} from 'node:child_process'
import {once} from 'node:events'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {after, before, describe, it} from 'node:test'
import type {Kafka} from 'kafkajs'
import seedrandom from 'seedrandom'
import {stringify} from 'yaml'
import {readManifest} from '../../src/lib/data/store.js'
import {runJson, startCli} from '../support/cli.js'
import {tempDir} from '../support/fixtures.js'
import {testKafka} from '../support/kafka-client.js'
import {digitMessage, mnistDigits, produce, storedKeys} from '../support/kafka-fixtures.js'

const N = 600
const ROUNDS = 12
const PARTITIONS = 4
const TOPIC = 'digits'
const GROUP = 'kill-test'
const SEED = 'kafka-kill-1'

const here = path.dirname(fileURLToPath(import.meta.url))
let broker: ChildProcess
let brokers: string
let kafka: Kafka
let dir: string
let cleanup: () => Promise<void>

before(async () => {
  ;({dir, cleanup} = await tempDir('ml-kafka-kill-'))
  // Offset commits are slow on this broker, which widens the window between a manifest commit and
  // its offset commit where a kill is the hardest case.
  const main = path.join(here, '..', 'support', 'kafka-broker-main.js')
  broker = spawn(process.execPath, [main, '--topic', `${TOPIC}:${PARTITIONS}`, '--delay', 'OffsetCommit:250'], {stdio: ['pipe', 'pipe', 'inherit']})
  const [line] = (await once(createInterface({input: broker.stdout!}), 'line')) as [string]
  brokers = `127.0.0.1:${(JSON.parse(line) as {port: number}).port}`
  kafka = testKafka(brokers)
})
after(async () => {
  if (broker.exitCode === null) {
    broker.kill('SIGTERM')
    await once(broker, 'exit')
  }
  await cleanup()
})

describe('ml ingest --follow killed at random moments', () => {
  it(`ends with exactly ${N} distinct images after ${ROUNDS} SIGKILLs`, async () => {
    const rng = seedrandom(SEED)
    const digits = await mnistDigits(N, 2000)
    assert.equal(new Set(digits.map((d) => d.key)).size, N, 'the fixture digits are distinct')
    const config = path.join(dir, 'ml.yaml')
    await writeFile(
      config,
      stringify({
        data: {
          // A short session so that a killed member's partitions move on quickly; frequent small
          // commits so that kills land between a manifest commit and its offset commit.
          sources: [{type: 'kafka', brokers: [brokers], topics: [TOPIC], groupId: GROUP, sessionTimeoutMs: 2000, rollIntervalMs: 100}],
          image: {width: 28, height: 28, channels: 1},
          store: 'store',
          shardSize: 20,
          concurrency: 2,
        },
      }),
    )

    const perRound = Math.ceil(N / ROUNDS)
    const versions: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      const {child, done} = startCli(['ingest', '--follow', '--config', config])
      // The producer writes this round's share in small requests while the ingest runs.
      const share = digits.slice(round * perRound, (round + 1) * perRound)
      const producing = (async () => {
        for (let i = 0; i < share.length; i += 10) await produce(kafka, TOPIC, share.slice(i, i + 10).map((d) => digitMessage(d)))
      })()
      const delay = 300 + Math.floor(rng() * 3700)
      await new Promise((resolve) => setTimeout(resolve, delay))
      child.kill('SIGKILL')
      const result = await done
      assert.equal(result.signal, 'SIGKILL', `round ${round} ended by itself: ${result.stderr}`)
      await producing
      versions.push(await readManifest(path.join(dir, 'store')).then((m) => m.version, () => 0))
    }

    // One clean run to catch up with whatever the last kill left.
    const final = await runJson<{total: number; accepted: number; rejected: number}>(['ingest', '--config', config])
    assert.equal(final.code, 0, final.stderr)

    const storeDir = path.join(dir, 'store')
    const manifest = await readManifest(storeDir)
    const stored = await storedKeys(storeDir)
    assert.equal(manifest.total, N, `total ${manifest.total}`)
    assert.equal(stored.size, N)
    assert.deepEqual(new Map(digits.map((d) => [d.key, d.label])), stored)
    const quarantine = await readFile(path.join(storeDir, 'quarantine.jsonl'), 'utf8').catch(() => '')
    assert.equal(quarantine.trim(), '', 'nothing quarantined')

    const admin = kafka.admin()
    await admin.connect()
    const [offsets] = await admin.fetchOffsets({groupId: GROUP, topics: [TOPIC]})
    const ends = await admin.fetchTopicOffsets(TOPIC)
    await admin.disconnect()
    const committed = Object.fromEntries(offsets!.partitions.map((p) => [String(p.partition), p.offset]))
    assert.deepEqual(committed, Object.fromEntries(ends.map((e) => [String(e.partition), e.offset])), 'group offsets at the end of the topic')
    assert.deepEqual(manifest.sources?.kafka?.[GROUP]?.[TOPIC], committed)
    // Progress was made across the kills, not only by the final run.
    console.log(`manifest versions after each kill: ${versions.join(' ')}; final run accepted ${final.json.accepted}`)
    assert.ok(versions.at(-1)! > 1, 'the killed runs committed something')
  })
})
