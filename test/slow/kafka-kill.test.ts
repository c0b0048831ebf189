// Exactly-once under crashes: `ml ingest --follow` is killed with SIGKILL at seeded random moments,
// many times, while a producer writes N digits; the dataset must end with each digit exactly once
// (the scenario is test/scenarios/ingest-kill.ts), on the in-repo broker.
import {after, before, describe, it} from 'node:test'
import type {Kafka} from 'kafkajs'
import {KAFKA_KILL, kafkaKillAndResume} from '../scenarios/ingest-kill.js'
import {tempDir} from '../support/fixtures.js'
import {startBrokerProcess, type BrokerProcess} from '../support/kafka-broker-process.js'
import {testKafka} from '../support/kafka-client.js'

let broker: BrokerProcess
let kafka: Kafka
let dir: string
let cleanup: () => Promise<void>

before(async () => {
  ;({dir, cleanup} = await tempDir('ml-kafka-kill-'))
  // Offset commits are slow on this broker, which widens the window between a manifest commit and
  // its offset commit where a kill is the hardest case.
  broker = await startBrokerProcess([[KAFKA_KILL.topic, KAFKA_KILL.partitions]], {OffsetCommit: 250})
  kafka = testKafka(broker.brokers)
})
after(async () => {
  await broker?.stop()
  await cleanup?.()
})

describe('ml ingest --follow killed at random moments', () => {
  it(`ends with exactly ${KAFKA_KILL.count} distinct images after ${KAFKA_KILL.rounds} SIGKILLs`, async () => {
    await kafkaKillAndResume(kafka, broker.brokers, dir, {seed: 'kafka-kill-1', killWindowMs: [300, 4000]})
  })
})
