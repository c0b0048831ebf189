// Exactly-once under crashes with a Kinesis source: `ml ingest --follow` is killed with SIGKILL at
// seeded random moments while a producer puts N digits into a 2-shard stream on moto; after a last
// clean run the dataset holds each digit exactly once (the scenario of test/scenarios/ingest-kill.ts,
// also run on Kafka), nothing was ever counted twice, and the manifest's per-shard positions are the
// last sequence number of each shard.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'
import {CreateStreamCommand, PutRecordsCommand, waitUntilStreamExists, type KinesisClient} from '@aws-sdk/client-kinesis'
import {killAndResume, type KillFeed} from '../../scenarios/ingest-kill.js'
import {kinesisClient, motoWorkspace, shardRecords, type MotoWorkspace} from '../../support/aws-fixtures.js'

const N = 300
const ROUNDS = 6
const STREAM = 'digits'
const SEED = 'kinesis-kill-1'

let ws: MotoWorkspace
let kinesis: KinesisClient

before(async () => {
  ws = await motoWorkspace('ml-kinesis-kill-')
  kinesis = kinesisClient(ws.moto.url)
  await kinesis.send(new CreateStreamCommand({StreamName: STREAM, ShardCount: 2}))
  await waitUntilStreamExists({client: kinesis, maxWaitTime: 30, minDelay: 1, maxDelay: 1}, {StreamName: STREAM})
})
after(async () => {
  kinesis?.destroy()
  await ws?.close()
})

/** The last sequence number of every shard that holds a record, read back with the SDK. */
async function lastSequenceNumbers(): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const [shard, records] of await shardRecords(kinesis, STREAM)) if (records.length > 0) out[shard] = records.at(-1)!.SequenceNumber!
  return out
}

describe('ml ingest --follow from Kinesis killed at random moments', () => {
  it(`ends with exactly ${N} distinct images after ${ROUNDS} SIGKILLs`, async () => {
    const feed: KillFeed = {
      source: {type: 'kinesis', stream: STREAM, format: 'image', rollIntervalMs: 100, maxRecordsPerCall: 25},
      async put(digits) {
        const Records = digits.map((d) => ({Data: Buffer.from(JSON.stringify({label: d.label, image: d.png.toString('base64')})), PartitionKey: d.key}))
        const answer = await kinesis.send(new PutRecordsCommand({StreamName: STREAM, Records}))
        assert.equal(answer.FailedRecordCount ?? 0, 0)
      },
      async atEnd(manifest) {
        // The digits are distinct, so any duplicate would be a record read again after a kill.
        assert.equal(manifest.history.reduce((n, h) => n + h.duplicates, 0), 0, 'no record was read twice')
        assert.equal(manifest.history.reduce((n, h) => n + h.accepted, 0), N)
        const positions = Object.fromEntries(Object.entries(manifest.sources?.kinesis?.[STREAM] ?? {}).map(([shard, p]) => [shard, p.sequenceNumber]))
        assert.deepEqual(positions, await lastSequenceNumbers(), 'each shard checkpointed at its last record')
      },
    }
    await killAndResume(feed, {dir: ws.dir, count: N, digitsFrom: 3000, rounds: ROUNDS, seed: SEED, killWindowMs: [3000, 7000], shardSize: 10, cli: {env: ws.env, cwd: ws.dir}})
  })
})
