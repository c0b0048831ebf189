// The Kafka commands through the real `ml` binary: `ml ingest publish` round trip, and
// `ml ingest --follow` with its metrics endpoint, ending cleanly on SIGTERM with everything committed.
import assert from 'node:assert/strict'
import {once} from 'node:events'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, describe, it} from 'node:test'
import {stringify} from 'yaml'
import {validateConfig} from '../../../src/lib/config/load.js'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {readManifest} from '../../../src/lib/data/store.js'
import {runCli, runJson, startCli} from '../../support/cli.js'
import {mnistFolders} from '../../support/fixtures.js'
import {brokerWorkspace, createTopics, digitMessage, mnistDigits, produce, storedKeys} from '../../support/kafka-fixtures.js'

const {broker, kafka, dir, close} = await brokerWorkspace('ml-kafka-cli-')
after(close)

async function writeConfig(file: string, source: Record<string, unknown>, store: string): Promise<string> {
  await writeFile(
    file,
    stringify({
      data: {
        sources: [{type: 'kafka', brokers: [broker.address], sessionTimeoutMs: 6000, ...source}],
        image: {width: 28, height: 28, channels: 1},
        store,
        shardSize: 1000,
      },
    }),
  )
  return file
}

/** Resolves once the group has committed `ends[p]` for every partition of `topic`. */
function committedUpTo(group: string, topic: string, ends: number[]): Promise<void> {
  const reached = () => ends.every((end, p) => broker.committed(group, topic, p) === end)
  return new Promise((resolve) => {
    if (reached()) return resolve()
    const onCommit = () => {
      if (!reached()) return
      broker.off('commit', onCommit)
      resolve()
    }
    broker.on('commit', onCommit)
  })
}

describe('ml ingest with Kafka (CLI)', () => {
  it('`ingest` is both a command and a topic: both help screens work', async () => {
    const ingest = await runCli(['ingest', '--help'])
    assert.equal(ingest.code, 0, ingest.stderr)
    assert.match(ingest.stdout, /--follow/)
    assert.match(ingest.stdout, /ingest publish/)
    const publish = await runCli(['ingest', 'publish', '--help'])
    assert.equal(publish.code, 0, publish.stderr)
    assert.match(publish.stdout, /--topic/)
    assert.match(publish.stdout, /FOLDER/)
  })

  it('publish puts a class-folder tree on a topic that ingests to the same dataset as the folder', async () => {
    const {train} = await mnistFolders(dir, 100, 0)
    const published = await runJson<{published: number; classes: number; topic: string}>([
      'ingest', 'publish', train, '--topic', 'pub', '--brokers', broker.address, '--partitions', '3',
    ])
    assert.equal(published.code, 0, published.stderr)
    assert.deepEqual([published.json.published, published.json.classes, published.json.topic], [100, 10, 'pub'])
    assert.equal(broker.partitions('pub'), 3)

    const config = await writeConfig(path.join(dir, 'pub.yaml'), {topics: ['pub'], groupId: 'pub-group'}, 'store-pub')
    const ingested = await runJson<{accepted: number; total: number}>(['ingest', '--config', config])
    assert.equal(ingested.code, 0, ingested.stderr)
    assert.equal(ingested.json.accepted, 100)

    const folder = await runIngest({
      config: validateConfig({data: {sources: [{type: 'folder', path: train}], image: {width: 28, height: 28, channels: 1}, store: 'store-folder'}}),
      baseDir: dir,
    })
    assert.equal(folder.total, 100)
    const fromKafka = await readManifest(path.join(dir, 'store-pub'))
    const fromFolder = await readManifest(path.join(dir, 'store-folder'))
    assert.equal(fromKafka.fingerprint, fromFolder.fingerprint, 'same images')
    assert.deepEqual(await storedKeys(path.join(dir, 'store-pub')), await storedKeys(path.join(dir, 'store-folder')))

    const missing = await runJson<{error: {code: string}}>(['ingest', 'publish', train, '--topic', 'nope', '--brokers', broker.address])
    assert.equal(missing.code, 3)
    assert.equal(missing.json.error.code, 'TOPIC_NOT_FOUND')
  })

  it('--follow serves metrics, commits as it goes and exits 0 on SIGTERM with data and offsets committed', async () => {
    const topic = 'live'
    const group = 'follow-group'
    await createTopics(kafka, [[topic, 2]])
    const digits = await mnistDigits(40, 1000)
    await produce(kafka, topic, digits.slice(0, 30).map((d) => digitMessage(d)))
    const ends = [0, 1].map((p) => broker.highWatermark(topic, p))
    const config = await writeConfig(path.join(dir, 'follow.yaml'), {topics: [topic], groupId: group, rollIntervalMs: 200}, 'store-follow')
    const committed = committedUpTo(group, topic, ends)
    const {child, done} = startCli(['ingest', '--follow', '--config', config, '--metrics-port', '0'])

    let stderr = ''
    child.stderr!.on('data', (d: string) => (stderr += d))
    while (!/metrics on (http:\/\/\S+)/.test(stderr)) await once(child.stderr!, 'data')
    const url = /metrics on (http:\/\/\S+)/.exec(stderr)![1]!
    await committed

    const metrics = await (await fetch(url)).text()
    const consumed = [...metrics.matchAll(/^ml_ingest_records_consumed_total\{topic="live",partition="\d"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)
    assert.equal(consumed, 30)
    assert.match(metrics, /^ml_ingest_kafka_lag\{topic="live",partition="0"\} 0$/m)
    assert.match(metrics, /^ml_ingest_shard_commits_total [1-9]/m)

    // Messages arriving right before the signal are either committed with it or left for later.
    await produce(kafka, topic, digits.slice(30).map((d) => digitMessage(d)))
    child.kill('SIGTERM')
    const result = await done
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /dataset v\d+ in /)

    const storeDir = path.join(dir, 'store-follow')
    const manifest = await readManifest(storeDir)
    const offsets = [0, 1].map((p) => broker.committed(group, topic, p)!)
    assert.deepEqual(manifest.sources?.kafka?.[group]?.[topic], {0: String(offsets[0]), 1: String(offsets[1])})
    assert.equal(manifest.total, offsets[0]! + offsets[1]!, 'every message below the committed offsets is stored')

    // A later run takes the rest, if any, and nothing twice.
    const rest = await runIngest({config: validateConfig({data: {sources: [{type: 'kafka', brokers: [broker.address], topics: [topic], groupId: group}], image: {width: 28, height: 28, channels: 1}, store: 'store-follow'}}), baseDir: dir})
    assert.equal(rest.total, 40)
    assert.equal((await storedKeys(storeDir)).size, 40)
  })
})
