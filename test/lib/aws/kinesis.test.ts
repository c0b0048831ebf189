// The kinesis source and `ml ingest publish --to kinesis` against moto's Kinesis, through the CLI:
// per-shard checkpoints in the manifest, a dead-letter stream, resharding (a split shard's children
// read after it), and nothing read twice across runs.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {CreateStreamCommand, ListShardsCommand, PutRecordCommand, SplitShardCommand, waitUntilStreamExists, type KinesisClient} from '@aws-sdk/client-kinesis'
import {stringify} from 'yaml'
import {writeFile} from 'node:fs/promises'
import {readManifest} from '../../../src/lib/data/store.js'
import {runJson} from '../../support/cli.js'
import {kinesisClient, motoWorkspace, shardRecords, type MotoWorkspace} from '../../support/aws-fixtures.js'
import {mnistFolders} from '../../support/fixtures.js'
import {storedKeys} from '../../support/kafka-fixtures.js'

let ws: MotoWorkspace
let dir: string
let env: NodeJS.ProcessEnv
let kinesis: KinesisClient

before(async () => {
  ws = await motoWorkspace('ml-kinesis-')
  ;({dir, env} = ws)
  kinesis = kinesisClient(ws.moto.url)
})
after(async () => {
  kinesis?.destroy()
  await ws?.close()
})

/** The data of every record of `stream`, shard after shard. */
async function allRecords(stream: string): Promise<Buffer[]> {
  return [...(await shardRecords(kinesis, stream)).values()].flat().map((r) => Buffer.from(r.Data!))
}

describe('ml ingest from a kinesis stream', () => {
  it('publishes a folder, ingests it with per-shard checkpoints and dead letters, follows a shard split, and never reads a record twice', async () => {
    const {train} = await mnistFolders(dir, 60, 0)
    const published = await runJson<{published: number; classes: number; stream: string}>(['ingest', 'publish', train, '--to', 'kinesis', '--stream', 'digits', '--shards', '2'], {env, cwd: dir})
    assert.equal(published.code, 0, published.stderr + JSON.stringify(published.json))
    assert.equal(published.json.published, 60)
    await kinesis.send(new CreateStreamCommand({StreamName: 'digits-dlq', ShardCount: 1}))
    await waitUntilStreamExists({client: kinesis, maxWaitTime: 30, minDelay: 1, maxDelay: 1}, {StreamName: 'digits-dlq'})
    await kinesis.send(new PutRecordCommand({StreamName: 'digits', PartitionKey: 'bad', Data: Buffer.from('not an envelope')}))
    const config = path.join(dir, 'ml.yaml')
    await writeFile(
      config,
      stringify({
        data: {
          sources: [{type: 'kinesis', stream: 'digits', deadLetterStream: 'digits-dlq'}],
          image: {width: 28, height: 28, channels: 1},
          store: 'store',
          shardSize: 16,
        },
      }),
    )
    const first = await runJson<Record<string, any>>(['ingest', '--config', config], {env, cwd: dir})
    assert.equal(first.code, 0, first.stderr)
    assert.equal(first.json.accepted + first.json.duplicates, 60)
    assert.deepEqual(first.json.rejectedByReason, {'malformed-record': 1})
    const store = path.join(dir, 'store')
    const m1 = await readManifest(store)
    const shardIds = ((await kinesis.send(new ListShardsCommand({StreamName: 'digits'}))).Shards ?? []).map((s) => s.ShardId!)
    assert.deepEqual(Object.keys(m1.sources?.kinesis?.digits ?? {}).sort(), shardIds.sort(), 'a position for every shard')
    const letters = (await allRecords('digits-dlq')).map((b) => JSON.parse(b.toString()) as Record<string, string>)
    assert.equal(letters.length, 1)
    assert.equal(letters[0]!.reason, 'malformed-record')
    assert.equal(letters[0]!.stream, 'digits')
    assert.equal(Buffer.from(letters[0]!.data!, 'base64').toString(), 'not an envelope')

    // Nothing new: nothing read again, no new version.
    const again = await runJson<Record<string, any>>(['ingest', '--config', config], {env, cwd: dir})
    assert.equal(again.code, 0, again.stderr)
    assert.equal(again.json.accepted + again.json.duplicates + again.json.rejected, 0)
    assert.equal((await readManifest(store)).version, m1.version)

    // More digits, then a reshard: the first shard is split. (moto keeps routing new records to a
    // split shard rather than to its children, so the records are published before the split; the
    // parent must then be read to its end, checkpointed closed, and its children taken up.)
    const more = await mnistFolders(path.join(dir, 'more'), 140, 0)
    const second = await runJson<{published: number}>(['ingest', 'publish', more.train, '--to', 'kinesis', '--stream', 'digits'], {env, cwd: dir})
    assert.equal(second.code, 0, second.stderr)
    const parent = (await kinesis.send(new ListShardsCommand({StreamName: 'digits'}))).Shards![0]!
    const start = BigInt(parent.HashKeyRange!.StartingHashKey!)
    const end = BigInt(parent.HashKeyRange!.EndingHashKey!)
    await kinesis.send(new SplitShardCommand({StreamName: 'digits', ShardToSplit: parent.ShardId!, NewStartingHashKey: String((start + end) / 2n)}))
    await waitUntilStreamExists({client: kinesis, maxWaitTime: 30, minDelay: 1, maxDelay: 1}, {StreamName: 'digits'})
    const third = await runJson<Record<string, any>>(['ingest', '--config', config], {env, cwd: dir})
    assert.equal(third.code, 0, third.stderr)
    // The first 60 of the 140 are the same digits as before: duplicates by content, not re-reads.
    assert.equal(third.json.accepted, 80)
    assert.equal(third.json.duplicates, 60)
    assert.equal(third.json.rejected, 0)
    const m3 = await readManifest(store)
    const positions = m3.sources!.kinesis!.digits!
    assert.equal(positions[parent.ShardId!]?.closed, true, `the split shard is closed: ${JSON.stringify(positions)}`)
    const children = ((await kinesis.send(new ListShardsCommand({StreamName: 'digits'}))).Shards ?? []).filter((s) => s.ParentShardId === parent.ShardId)
    assert.equal(children.length, 2)
    for (const child of children) assert.ok(positions[child.ShardId!] === undefined || !positions[child.ShardId!]!.closed, `child ${child.ShardId} is open`)
    const keys = await storedKeys(store)
    assert.equal(keys.size, 140)
    const history = m3.history
    assert.equal(history.reduce((n, h) => n + h.accepted, 0), 140)
  })
})
