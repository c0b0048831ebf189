// Exactly-once under crashes with a Kinesis source: `ml ingest --follow` is killed with SIGKILL at
// seeded random moments while a producer puts N digits into a 2-shard stream on moto; after a last
// clean run the dataset holds each digit exactly once (the scenario of test/scenarios/ingest-kill.ts,
// also run on Kafka), nothing was ever counted twice, and the manifest's per-shard positions are the
// last sequence number of each shard.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'
import {CreateStreamCommand, GetRecordsCommand, GetShardIteratorCommand, KinesisClient, ListShardsCommand, PutRecordsCommand, waitUntilStreamExists} from '@aws-sdk/client-kinesis'
import {NodeHttpHandler} from '@smithy/node-http-handler'
import {killAndResume, type KillFeed} from '../../scenarios/ingest-kill.js'
import {awsEnv, useTestCredentials} from '../../support/aws-fixtures.js'
import {guardNetwork} from '../../support/cloud-fixtures.js'
import {tempDir} from '../../support/fixtures.js'
import {MotoServer} from '../../support/moto-server.js'

const N = 300
const ROUNDS = 6
const STREAM = 'digits'
const SEED = 'kinesis-kill-1'

let moto: MotoServer
let dir: string
let cleanup: () => Promise<void>
let env: NodeJS.ProcessEnv
let checkNetwork: () => Promise<void>
let kinesis: KinesisClient

before(async () => {
  ;({dir, cleanup} = await tempDir('ml-kinesis-kill-'))
  checkNetwork = guardNetwork(dir)
  useTestCredentials()
  moto = await MotoServer.start()
  env = awsEnv(moto, dir)
  kinesis = new KinesisClient({endpoint: moto.url, region: 'us-east-1', credentials: {accessKeyId: 'testing', secretAccessKey: 'testing'}, requestHandler: new NodeHttpHandler()})
  await kinesis.send(new CreateStreamCommand({StreamName: STREAM, ShardCount: 2}))
  await waitUntilStreamExists({client: kinesis, maxWaitTime: 30, minDelay: 1, maxDelay: 1}, {StreamName: STREAM})
})
after(async () => {
  kinesis.destroy()
  await moto.close()
  await checkNetwork()
  await cleanup()
})

/** The last sequence number of every shard, read back with the SDK. */
async function lastSequenceNumbers(): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const shard of (await kinesis.send(new ListShardsCommand({StreamName: STREAM}))).Shards ?? []) {
    let iterator = (await kinesis.send(new GetShardIteratorCommand({StreamName: STREAM, ShardId: shard.ShardId!, ShardIteratorType: 'TRIM_HORIZON'}))).ShardIterator
    for (;;) {
      const answer = await kinesis.send(new GetRecordsCommand({ShardIterator: iterator!}))
      const records = answer.Records ?? []
      if (records.length > 0) out[shard.ShardId!] = records.at(-1)!.SequenceNumber!
      if (records.length === 0 || !answer.NextShardIterator) break
      iterator = answer.NextShardIterator
    }
  }
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
    await killAndResume(feed, {dir, count: N, digitsFrom: 3000, rounds: ROUNDS, seed: SEED, killWindowMs: [3000, 7000], shardSize: 10, cli: {env, cwd: dir}})
  })
})
