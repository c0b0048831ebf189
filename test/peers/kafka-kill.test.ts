// Exactly-once under crashes, against a real Kafka broker: `ml ingest --follow` is killed with SIGKILL
// at seeded random moments while a producer writes N digits; the dataset ends with each digit exactly
// once, and the group's offsets and the manifest both at the end of the topic.
import assert from 'node:assert/strict'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import type {Kafka} from 'kafkajs'
import seedrandom from 'seedrandom'
import {stringify} from 'yaml'
import {readManifest} from '../../src/lib/data/store.js'
import {runJson, startCli} from '../support/cli.js'
import {tempDir} from '../support/fixtures.js'
import {testKafka} from '../support/kafka-client.js'
import {createTopics, digitMessage, mnistDigits, produce, storedKeys} from '../support/kafka-fixtures.js'
import {kafkaSkip, RealKafka} from './support/kafka.js'
import {committedOffsets, endOffsets} from './support/kafka-admin.js'

const skip = kafkaSkip()
const N = 600
const ROUNDS = 12
const PARTITIONS = 4
const TOPIC = 'digits'
const GROUP = 'kill-test'
const SEED = 'kafka-kill-real-1'

let broker: RealKafka
let kafka: Kafka
let dir: string
let cleanup: () => Promise<void>

before(async () => {
  if (skip) return
  ;({dir, cleanup} = await tempDir('ml-peer-kafka-kill-'))
  broker = await RealKafka.start()
  kafka = testKafka(broker.address())
  await createTopics(kafka, [[TOPIC, PARTITIONS]])
})
after(async () => {
  await broker?.stop()
  await cleanup?.()
})

describe('ml ingest --follow killed at random moments, on a real Kafka broker', {skip}, () => {
  it(`ends with exactly ${N} distinct images after ${ROUNDS} SIGKILLs`, async () => {
    const rng = seedrandom(SEED)
    const digits = await mnistDigits(N, 2000)
    assert.equal(new Set(digits.map((d) => d.key)).size, N, 'the fixture digits are distinct')
    const config = path.join(dir, 'ml.yaml')
    await writeFile(
      config,
      stringify({
        data: {
          sources: [{type: 'kafka', brokers: [broker.address()], topics: [TOPIC], groupId: GROUP, sessionTimeoutMs: 2000, rollIntervalMs: 100}],
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
      const share = digits.slice(round * perRound, (round + 1) * perRound)
      const producing = (async () => {
        for (let i = 0; i < share.length; i += 10) await produce(kafka, TOPIC, share.slice(i, i + 10).map((d) => digitMessage(d)))
      })()
      // The kill lands at a seeded moment: the point of the test, not a wait for something. Later
      // than on the in-repo broker: a real broker holds a new member's join until the killed one's
      // 2 s session has expired, and the CLI itself takes a second or two to start.
      await new Promise((resolve) => setTimeout(resolve, 2500 + Math.floor(rng() * 5500)))
      child.kill('SIGKILL')
      const result = await done
      assert.equal(result.signal, 'SIGKILL', `round ${round} ended by itself: ${result.stderr}`)
      await producing
      versions.push(await readManifest(path.join(dir, 'store')).then((m) => m.version, () => 0))
    }
    const final = await runJson<{accepted: number}>(['ingest', '--config', config])
    assert.equal(final.code, 0, final.stderr)

    const storeDir = path.join(dir, 'store')
    const manifest = await readManifest(storeDir)
    const stored = await storedKeys(storeDir)
    assert.equal(manifest.total, N, `total ${manifest.total}`)
    assert.deepEqual(new Map(digits.map((d) => [d.key, d.label])), stored)
    assert.equal((await readFile(path.join(storeDir, 'quarantine.jsonl'), 'utf8').catch(() => '')).trim(), '', 'nothing quarantined')
    const ends = await endOffsets(kafka, TOPIC)
    assert.deepEqual(await committedOffsets(kafka, GROUP, TOPIC), ends, 'group offsets at the end of the topic')
    assert.deepEqual(manifest.sources?.kafka?.[GROUP]?.[TOPIC], Object.fromEntries(ends.map((o, p) => [String(p), String(o)])))
    console.log(`manifest versions after each kill: ${versions.join(' ')}; final run accepted ${final.json.accepted}`)
    assert.ok(versions.at(-1)! > 1, 'the killed runs committed something')
  })
})
