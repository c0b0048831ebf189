// Exactly-once under crashes with a Kinesis source: `ml ingest --follow` is killed with SIGKILL at
// seeded random moments while a producer puts N digits into a 2-shard stream on moto; after a last
// clean run the dataset holds each digit exactly once, nothing was ever counted twice, and the
// manifest's per-shard positions are the last sequence number of each shard.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {CreateStreamCommand, GetRecordsCommand, GetShardIteratorCommand, KinesisClient, ListShardsCommand, PutRecordsCommand, waitUntilStreamExists} from '@aws-sdk/client-kinesis'
import {NodeHttpHandler} from '@smithy/node-http-handler'
import seedrandom from 'seedrandom'
import {stringify} from 'yaml'
import {readManifest} from '../../../src/lib/data/store.js'
import {runJson, startCli} from '../../support/cli.js'
import {awsEnv, useTestCredentials} from '../../support/aws-fixtures.js'
import {guardNetwork} from '../../support/cloud-fixtures.js'
import {tempDir} from '../../support/fixtures.js'
import {mnistDigits, storedKeys} from '../../support/kafka-fixtures.js'
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
    const rng = seedrandom(SEED)
    const digits = await mnistDigits(N, 3000)
    assert.equal(new Set(digits.map((d) => d.key)).size, N, 'the fixture digits are distinct')
    const config = path.join(dir, 'ml.yaml')
    await writeFile(
      config,
      stringify({
        data: {
          // Frequent small commits, so that kills land between and during them.
          sources: [{type: 'kinesis', stream: STREAM, format: 'image', rollIntervalMs: 100, maxRecordsPerCall: 25}],
          image: {width: 28, height: 28, channels: 1},
          store: 'store',
          shardSize: 10,
          concurrency: 2,
        },
      }),
    )
    const perRound = Math.ceil(N / ROUNDS)
    const versions: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      const {child, done} = startCli(['ingest', '--follow', '--config', config], {env, cwd: dir})
      const share = digits.slice(round * perRound, (round + 1) * perRound)
      const producing = (async () => {
        for (let i = 0; i < share.length; i += 10) {
          const Records = share.slice(i, i + 10).map((d) => ({Data: Buffer.from(JSON.stringify({label: d.label, image: d.png.toString('base64')})), PartitionKey: d.key}))
          const answer = await kinesis.send(new PutRecordsCommand({StreamName: STREAM, Records}))
          assert.equal(answer.FailedRecordCount ?? 0, 0)
        }
      })()
      const delay = 3000 + Math.floor(rng() * 4000)
      await new Promise((resolve) => setTimeout(resolve, delay))
      child.kill('SIGKILL')
      const result = await done
      assert.equal(result.signal, 'SIGKILL', `round ${round} ended by itself: ${result.stderr}`)
      await producing
      versions.push(await readManifest(path.join(dir, 'store')).then((m) => m.version, () => 0))
    }

    // One clean run to catch up with whatever the last kill left.
    const final = await runJson<{total: number; accepted: number; duplicates: number}>(['ingest', '--config', config], {env, cwd: dir})
    assert.equal(final.code, 0, final.stderr)

    const storeDir = path.join(dir, 'store')
    const manifest = await readManifest(storeDir)
    const stored = await storedKeys(storeDir)
    assert.equal(manifest.total, N, `total ${manifest.total}`)
    assert.deepEqual(new Map(digits.map((d) => [d.key, d.label])), stored)
    // The digits are distinct, so any duplicate would be a record read again after a kill.
    assert.equal(manifest.history.reduce((n, h) => n + h.duplicates, 0), 0, 'no record was read twice')
    assert.equal(manifest.history.reduce((n, h) => n + h.accepted, 0), N)
    const positions = Object.fromEntries(Object.entries(manifest.sources?.kinesis?.[STREAM] ?? {}).map(([shard, p]) => [shard, p.sequenceNumber]))
    assert.deepEqual(positions, await lastSequenceNumbers(), 'each shard checkpointed at its last record')
    console.log(`manifest versions after each kill: ${versions.join(' ')}; final run accepted ${final.json.accepted}`)
    assert.ok(versions.at(-1)! > 1, 'the killed runs committed something')
  })
})
