// Two `runIngest` of one consumer group writing one dataset store at once (shared writers): the
// partitions are split between them, rebalances move partitions while both commit every few
// records, and the store ends with every digit once and every partition's position at its end.
import assert from 'node:assert/strict'
import path from 'node:path'
import {after, describe, it} from 'node:test'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {readManifest} from '../../../src/lib/data/store.js'
import {brokerWorkspace, createTopics, digitMessage, kafkaConfig, mnistDigits, produce, storedKeys} from '../../support/kafka-fixtures.js'

const PARTITIONS = 4
const {broker, kafka, dir, close} = await brokerWorkspace('ml-ingest-group-')
after(close)

describe('two ingests of one consumer group into one store', () => {
  it('store every digit exactly once, with the partitions split between them', async () => {
    const digits = await mnistDigits(200, 6000)
    await createTopics(kafka, [['group-digits', PARTITIONS]])
    await produce(kafka, 'group-digits', digits.map((d) => digitMessage(d)))
    // Small shards: many commits, so that the two race for manifest versions again and again.
    const config = kafkaConfig({brokers: [broker.address], topics: ['group-digits'], groupId: 'shared', sessionTimeoutMs: 3000}, {shardSize: 8, concurrency: 2})
    const [a, b] = await Promise.all([runIngest({config, baseDir: dir}), runIngest({config, baseDir: dir})])
    const storeDir = path.join(dir, 'store')
    const manifest = await readManifest(storeDir)
    const stored = await storedKeys(storeDir)
    assert.deepEqual(stored, new Map(digits.map((d) => [d.key, d.label])))
    assert.equal(manifest.total, digits.length)
    assert.equal(a.accepted + b.accepted, digits.length, `accepted ${a.accepted} + ${b.accepted}`)
    assert.ok(a.accepted > 0 && b.accepted > 0, `both members stored digits: ${a.accepted} and ${b.accepted}`)
    const ends = Object.fromEntries(Array.from({length: PARTITIONS}, (_, p) => [String(p), String(broker.highWatermark('group-digits', p))]))
    assert.deepEqual(manifest.sources?.kafka?.shared?.['group-digits'], ends)
    // Shard names carry each writer's id: two writers, no name written twice.
    const writers = new Set(manifest.shards.map((s) => /-w([0-9a-f]{8})-/.exec(s.file)?.[1]))
    assert.equal(writers.size, 2, [...writers].join(', '))
    assert.deepEqual(manifest.classes.slice().sort(), [...new Set(digits.map((d) => d.label))].sort())
  })
})
