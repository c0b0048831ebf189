// Exactly-once under crashes, against a real Kafka broker: `ml ingest --follow` is killed with SIGKILL
// at seeded random moments while a producer writes N digits; the dataset ends with each digit exactly
// once, and the group's offsets and the manifest both at the end of the topic (the scenario is
// test/scenarios/ingest-kill.ts, also run on the in-repo broker by test/slow/kafka-kill.test.ts).
import {after, before, describe, it} from 'node:test'
import type {Kafka} from 'kafkajs'
import {kafkaFeed, killAndResume} from '../scenarios/ingest-kill.js'
import {tempDir} from '../support/fixtures.js'
import {testKafka} from '../support/kafka-client.js'
import {createTopics} from '../support/kafka-fixtures.js'
import {kafkaSkip, RealKafka} from './support/kafka.js'

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
    // Kills come later than on the in-repo broker: a real broker holds a new member's join until the
    // killed one's 2 s session has expired, and the CLI itself takes a second or two to start.
    await killAndResume(kafkaFeed(kafka, broker.address(), TOPIC, GROUP), {dir, count: N, digitsFrom: 2000, rounds: ROUNDS, seed: SEED, killWindowMs: [2500, 8000], shardSize: 20})
  })
})
