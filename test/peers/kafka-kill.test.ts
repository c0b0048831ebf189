// Exactly-once under crashes, against a real Kafka broker: `ml ingest --follow` is killed with SIGKILL
// at seeded random moments while a producer writes N digits; the dataset ends with each digit exactly
// once, and the group's offsets and the manifest both at the end of the topic (the scenario is
// test/scenarios/ingest-kill.ts, also run on the in-repo broker by test/slow/kafka-kill.test.ts).
import {after, before, describe, it} from 'node:test'
import type {Kafka} from 'kafkajs'
import {KAFKA_KILL, kafkaKillAndResume} from '../scenarios/ingest-kill.js'
import {tempDir} from '../support/fixtures.js'
import {testKafka} from '../support/kafka-client.js'
import {createTopics} from '../support/kafka-fixtures.js'
import {kafkaSkip, RealKafka} from './support/kafka.js'

const skip = kafkaSkip()

let broker: RealKafka
let kafka: Kafka
let dir: string
let cleanup: () => Promise<void>

before(async () => {
  if (skip) return
  ;({dir, cleanup} = await tempDir('ml-peer-kafka-kill-'))
  broker = await RealKafka.start()
  kafka = testKafka(broker.address())
  await createTopics(kafka, [[KAFKA_KILL.topic, KAFKA_KILL.partitions]])
})
after(async () => {
  await broker?.stop()
  await cleanup?.()
})

describe('ml ingest --follow killed at random moments, on a real Kafka broker', {skip}, () => {
  it(`ends with exactly ${KAFKA_KILL.count} distinct images after ${KAFKA_KILL.rounds} SIGKILLs`, async () => {
    // Kills come later than on the in-repo broker: a real broker holds a new member's join until the
    // killed one's 2 s session has expired, and the CLI itself takes a second or two to start.
    await kafkaKillAndResume(kafka, broker.address(), dir, {seed: 'kafka-kill-real-1', killWindowMs: [2500, 8000]})
  })
})
