// `runIngest` from Kafka topics served by the test broker: end to end with bad messages (quarantine and
// dead-letter topic), exactly-once across a crash between the manifest and the offset commit, the
// json format, backpressure, a rebalance that moves partitions to another consumer mid-stream, and a
// member whose session expired while it held uncommitted work (the group went on without it).
import assert from 'node:assert/strict'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, afterEach, before, describe, it} from 'node:test'
import type {Consumer} from 'kafkajs'
import {runIngest, type IngestObserver} from '../../../src/lib/data/ingest.js'
import {UserError} from '../../../src/lib/errors.js'
import {brokerReads, brokerWorkspace, createTopics, digitMessage, kafkaConfig, mnistDigits, produce, sha256, storedKeys, type Digit} from '../../support/kafka-fixtures.js'
import {deadLettersEndToEnd} from '../../scenarios/kafka-dead-letters.js'
import {rebalanceLosesNothing} from '../../scenarios/kafka-rebalance.js'
import {FAST_CONSUMER} from '../../support/kafka-client.js'

const {broker, kafka, dir, close} = await brokerWorkspace('ml-kafka-ingest-')
let digits: Digit[]
const consumers: Consumer[] = []

before(async () => {
  digits = await mnistDigits(240)
})
afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.disconnect().catch(() => {})))
})
after(close)

let n = 0
/** A fresh workspace folder, topic names and group id for one test. */
function names() {
  const id = n++
  return {ws: path.join(dir, `ws${id}`), topic: `digits-${id}`, dead: `dead-${id}`, group: `g-${id}`}
}

const offsetsOf = (topic: string, partitions: number) => Array.from({length: partitions}, (_, p) => broker.highWatermark(topic, p))

/** `all` spread over a new 4-partition topic; resolves with each partition's end offset. */
async function fourPartitions(topic: string, all: Digit[]): Promise<number[]> {
  await createTopics(kafka, [[topic, 4]])
  await produce(kafka, topic, all.map((d, i) => ({...digitMessage(d), partition: i % 4})))
  return offsetsOf(topic, 4)
}

/** Waits driven by events: until(check) resolves once check() holds, tried now and at every recheck(). */
function conditions() {
  const checks = new Set<() => void>()
  const until = (check: () => boolean) => new Promise<void>((resolve) => {
    const run = () => {
      if (!check()) return
      checks.delete(run)
      resolve()
    }
    checks.add(run)
    run()
  })
  const recheck = () => [...checks].forEach((run) => run())
  return {until, recheck}
}

/**
 * A follow-mode ingest of `topic` as client `clientId` that commits only when it ends (the abort);
 * `progress.accepted` follows its progress, each report a recheck().
 */
function followIngest(options: {ws: string; topic: string; group: string; clientId: string; recheck: () => void; observer?: IngestObserver}) {
  const progress = {accepted: 0}
  const controller = new AbortController()
  const ingest = runIngest({
    config: kafkaConfig({brokers: [broker.address], topics: [options.topic], groupId: options.group, clientId: options.clientId}, {shardSize: 10_000, concurrency: 2}),
    baseDir: options.ws,
    ...(options.observer ? {observer: options.observer} : {}),
    follow: true,
    rollIntervalMs: 3_600_000,
    signal: controller.signal,
    onProgress: (p) => {
      progress.accepted = p.accepted
      options.recheck()
    },
  })
  return {progress, controller, ingest}
}

describe('ingest from Kafka', () => {
  it('ingests a topic end to end: corrupt and unlabelled messages go to the quarantine and the dead-letter topic', async () => {
    await deadLettersEndToEnd({...names(), kafka, brokers: [broker.address], digits, reads: brokerReads(broker)})
  })

  it('names the config key when a topic does not exist, and stores nothing', async () => {
    const {ws, group} = names()
    await assert.rejects(
      runIngest({config: kafkaConfig({brokers: [broker.address], topics: ['no-such-topic'], groupId: group}), baseDir: ws}),
      (error: unknown) => {
        assert.ok(error instanceof UserError)
        assert.equal(error.code, 'SOURCE_NOT_FOUND')
        assert.match(error.message, /data\.sources\[0\]\.topics: topic no-such-topic does not exist/)
        return true
      },
    )
    assert.equal(broker.hasTopic('no-such-topic'), false, 'the source never creates topics')
  })

  it('stores nothing twice after a crash between the manifest commit and the offset commit', async () => {
    const {ws, topic, group} = names()
    await createTopics(kafka, [[topic, 2]])
    const first = digits.slice(0, 50)
    await produce(kafka, topic, first.map((d) => digitMessage(d)))
    const config = kafkaConfig({brokers: [broker.address], topics: [topic], groupId: group})
    const v1 = await runIngest({config, baseDir: ws})
    assert.equal(v1.accepted, 50)

    // The crash: the offset commit never reached Kafka (the group has no offsets at all).
    broker.setCommitted(group, topic, 0, undefined)
    broker.setCommitted(group, topic, 1, undefined)
    const more = digits.slice(50, 60)
    await produce(kafka, topic, more.map((d) => digitMessage(d)))
    const v2 = await runIngest({config, baseDir: ws})
    // The old messages are recognised by their offsets: not even counted as duplicates.
    assert.deepEqual([v2.accepted, v2.duplicates, v2.total], [10, 0, 60])
    assert.deepEqual([0, 1].map((p) => broker.committed(group, topic, p)), offsetsOf(topic, 2))

    // Without the recorded offsets (a store from before they existed), the content hash still
    // drops every repeat.
    const file = path.join(ws, 'store', 'manifest.json')
    const manifest = JSON.parse(await readFile(file, 'utf8'))
    delete manifest.sources
    await writeFile(file, JSON.stringify(manifest))
    broker.setCommitted(group, topic, 0, 0)
    broker.setCommitted(group, topic, 1, 0)
    const v3 = await runIngest({config, baseDir: ws})
    assert.deepEqual([v3.accepted, v3.duplicates, v3.total], [0, 60, 60])
    const stored = await storedKeys(path.join(ws, 'store'))
    assert.equal(stored.size, 60)
  })

  it('reads the json format ({label, uri} of a local file) and quarantines bad and gs:// messages', async () => {
    const {ws, topic, group} = names()
    await createTopics(kafka, [[topic, 1]])
    const {mkdir} = await import('node:fs/promises')
    await mkdir(path.join(ws, 'files'), {recursive: true})
    const files = digits.slice(100, 110)
    for (const [i, d] of files.entries()) await writeFile(path.join(ws, 'files', `${i}.png`), d.png)
    const messages = files.map((d, i) => ({value: Buffer.from(JSON.stringify({label: d.label, uri: i % 2 ? `files/${i}.png` : `file://${path.join(ws, 'files', `${i}.png`)}`}))}))
    messages.push({value: Buffer.from(JSON.stringify({label: '3', uri: 'gs://bucket/x.png'}))})
    // Not JSON, and what it holds must stay out of the quarantine (the parser's message quotes it).
    messages.push({value: Buffer.from('not json: api-token=s3cr3t')})
    messages.push({value: Buffer.from(JSON.stringify({label: '3', uri: 'files/missing.png'}))})
    await produce(kafka, topic, messages)
    const summary = await runIngest({config: kafkaConfig({brokers: [broker.address], topics: [topic], groupId: group, format: 'json'}), baseDir: ws})
    assert.equal(summary.accepted, 10)
    assert.deepEqual(summary.rejectedByReason, {'unsupported-uri': 1, 'bad-message': 1, unreadable: 1})
    const quarantine = (await readFile(path.join(ws, 'store', 'quarantine.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l))
    assert.match(quarantine.find((q) => q.reason === 'unsupported-uri').detail, /gs:\/\/ .*not read by the kafka source yet/)
    assert.match(quarantine.find((q) => q.reason === 'bad-message').detail, /is not JSON/)
    assert.doesNotMatch(JSON.stringify(quarantine), /s3cr3t/)
    assert.deepEqual(await storedKeys(path.join(ws, 'store')), new Map(files.map((d) => [sha256(d.png), d.label])))
  })

  it('pauses and resumes the consumer under a tiny maxInFlightBytes and loses nothing (label from the key, tiny shards)', async () => {
    const {ws, topic, group} = names()
    await createTopics(kafka, [[topic, 4]])
    const batch = digits.slice(0, 200)
    await produce(kafka, topic, batch.map((d) => ({key: d.label, value: d.png})), 10)
    const pauses: boolean[] = []
    const summary = await runIngest({
      config: kafkaConfig({brokers: [broker.address], topics: [topic], groupId: group, labelFrom: 'key', maxInFlightBytes: 4000}, {shardSize: 16, concurrency: 2}),
      baseDir: ws,
      observer: {paused: (on) => pauses.push(on)},
    })
    assert.equal(summary.accepted, 200)
    assert.ok(summary.datasetVersion > 5, `commits every 16 records: version ${summary.datasetVersion}`)
    assert.deepEqual(await storedKeys(path.join(ws, 'store')), new Map(batch.map((d) => [d.key, d.label])))
    assert.ok(pauses.filter(Boolean).length >= 2, `paused ${pauses.filter(Boolean).length} time(s)`)
    assert.ok(pauses.filter((on) => !on).length >= 1, 'and resumed')
  })

  it('drops the uncommitted work of partitions revoked by a rebalance, so that nothing is lost or stored twice', async () => {
    const {ws, topic, group} = names()
    await rebalanceLosesNothing({
      kafka,
      brokers: [broker.address],
      ws,
      topic,
      group,
      digits,
      consumers,
      endOffsets: async () => offsetsOf(topic, 4),
      committed: async () => [0, 1, 2, 3].map((p) => broker.committed(group, topic, p)),
    })
  })

  it('drops the work of every partition when the group went on without it (session expired), kept partitions included', async () => {
    // Ingest A holds the uncommitted work of all 4 partitions when its session ends (heartbeats that
    // came too late). B joins, takes all 4, consumes and commits everything while A's rejoin is held
    // back; then A rejoins with a new member id and gets 2 partitions back. Their messages were
    // consumed by B meanwhile: A must drop its work on them too, not only on the 2 it lost.
    const {ws, topic, group} = names()
    const all = digits.slice(0, 80)
    const ends = await fourPartitions(topic, all)

    const {until, recheck} = conditions()
    const warnings: string[] = []
    const {progress, controller, ingest} = followIngest({ws, topic, group, clientId: 'ingest-a', recheck, observer: {warn: (message) => warnings.push(message)}})
    await until(() => progress.accepted === all.length)
    const [a] = broker.group(group)!.members
    const releaseA = broker.hold('JoinGroup', 'ingest-a')
    broker.expire(group, a!)

    const other: string[] = []
    let bAssigned: number[] = []
    const b = kafka.consumer({groupId: group, ...FAST_CONSUMER})
    consumers.push(b)
    b.on(b.events.GROUP_JOIN, (e) => {
      bAssigned = e.payload.memberAssignment[topic] ?? []
      recheck()
    })
    broker.on('commit', recheck)
    await b.connect()
    await b.subscribe({topic, fromBeginning: true})
    await b.run({
      eachMessage: async ({message}) => {
        other.push(sha256(message.value!))
      },
    })
    const committed = () => [0, 1, 2, 3].map((p) => broker.committed(group, topic, p))
    await until(() => bAssigned.length === 4 && committed().every((offset, p) => offset === ends[p]))
    assert.equal(progress.accepted, all.length, 'A has not heard of the rebalance yet')

    const before = progress.accepted
    releaseA()
    // A back in the group, with part of the partitions: it reports what it took back.
    await until(() => bAssigned.length === 2 && progress.accepted !== before)
    broker.off('commit', recheck)
    controller.abort()
    const summary = await ingest
    const stored = await storedKeys(path.join(ws, 'store'))
    assert.deepEqual(other.filter((k) => stored.has(k)), [], 'stored by A, consumed by B')
    assert.equal(summary.accepted + other.length, all.length)
    assert.deepEqual(new Set([...stored.keys(), ...other]), new Set(all.map((d) => d.key)))
    assert.deepEqual(committed(), ends)
    assert.match(warnings.join('\n'), new RegExp(`rejoined consumer group ${group} as a new member .*raise sessionTimeoutMs`))
  })

  it('a commit that starts while the member rejoins the group records only the partitions it keeps', async () => {
    // Ingest A holds the uncommitted work of all 4 partitions; B joins, and A is rejoining (its
    // JoinGroup held back) when its run ends and the last commit starts. Positions taken then would
    // include the partitions B gets, whose offsets A could not commit any more (its offset commit
    // lands after the new generation began): B would read them again.
    const {ws, topic, group} = names()
    const all = digits.slice(80, 160)
    const ends = await fourPartitions(topic, all)

    const {until, recheck} = conditions()
    const {progress, controller, ingest} = followIngest({ws, topic, group, clientId: 'ingest-c', recheck})
    await until(() => progress.accepted === all.length)
    const releaseJoin = broker.hold('JoinGroup', 'ingest-c')
    const releaseCommit = broker.hold('OffsetCommit', 'ingest-c')
    let rejoining = false
    const onRequest = (e: {api: string; clientId: string | null}) => {
      if (e.api === 'JoinGroup' && e.clientId === 'ingest-c') rejoining = true
      recheck()
    }
    broker.on('request', onRequest)

    const other: string[] = []
    const positions = new Map<number, number>()
    let bAssigned: number[] = []
    const b = kafka.consumer({groupId: group, ...FAST_CONSUMER})
    consumers.push(b)
    b.on(b.events.GROUP_JOIN, (e) => {
      bAssigned = e.payload.memberAssignment[topic] ?? []
      recheck()
    })
    await b.connect()
    await b.subscribe({topic, fromBeginning: true})
    // B's join completes only once A has rejoined too.
    const bRunning = b.run({
      eachMessage: async ({partition, message}) => {
        other.push(sha256(message.value!))
        positions.set(partition, Number(message.offset) + 1)
        recheck()
      },
    })
    await until(() => rejoining)
    broker.off('request', onRequest)
    controller.abort()
    releaseJoin()
    await bRunning
    await until(() => bAssigned.length === 2 && bAssigned.every((p) => positions.get(p) === ends[p]))
    releaseCommit()
    const summary = await ingest
    await b.disconnect()
    const stored = await storedKeys(path.join(ws, 'store'))
    assert.deepEqual(other.filter((k) => stored.has(k)), [], 'stored by A, consumed by B')
    assert.equal(summary.accepted + other.length, all.length)
    assert.deepEqual(new Set([...stored.keys(), ...other]), new Set(all.map((d) => d.key)))
    assert.deepEqual([0, 1, 2, 3].map((p) => broker.committed(group, topic, p)), ends)
  })
})
