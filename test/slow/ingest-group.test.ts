// Ingest scaled out: three `ml ingest --follow` processes in one consumer group write one dataset
// store while a producer writes N digits; one member at a time is killed with SIGKILL at seeded
// random moments and started again. The dataset must end with each digit exactly once, and the
// manifest and the group's offsets at the end of every partition.
import assert from 'node:assert/strict'
import {spawn, type ChildProcess} from 'node:child_process'
import {once} from 'node:events'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {after, before, describe, it} from 'node:test'
import type {Kafka} from 'kafkajs'
import seedrandom from 'seedrandom'
import {stringify} from 'yaml'
import {readManifest} from '../../src/lib/data/store.js'
import {startCli, type CliResult} from '../support/cli.js'
import {tempDir} from '../support/fixtures.js'
import {testKafka} from '../support/kafka-client.js'
import {digitMessage, mnistDigits, produce, storedKeys} from '../support/kafka-fixtures.js'

const N = 600
const MEMBERS = 3
const KILLS = 6
const PARTITIONS = 6
const TOPIC = 'digits'
const GROUP = 'group-test'
const SEED = 'ingest-group-1'
/** Exit code of a member fenced out of a commit (INGEST_FENCED, exit kind "service"): restarted like a killed one. */
const FENCED_EXIT = 5

const here = path.dirname(fileURLToPath(import.meta.url))
let broker: ChildProcess
let brokers: string
let kafka: Kafka
let dir: string
let cleanup: () => Promise<void>

before(async () => {
  ;({dir, cleanup} = await tempDir('ml-ingest-group-'))
  // Slow offset commits widen the window between a manifest commit and its offset commit.
  const main = path.join(here, '..', 'support', 'kafka-broker-main.js')
  broker = spawn(process.execPath, [main, '--topic', `${TOPIC}:${PARTITIONS}`, '--delay', 'OffsetCommit:150'], {stdio: ['pipe', 'pipe', 'inherit']})
  const [line] = (await once(createInterface({input: broker.stdout!}), 'line')) as [string]
  brokers = `127.0.0.1:${(JSON.parse(line) as {port: number}).port}`
  kafka = testKafka(brokers)
})
after(async () => {
  if (broker.exitCode === null) {
    broker.kill('SIGTERM')
    await once(broker, 'exit')
  }
  await cleanup()
})

interface Member {
  child: ChildProcess
  done: Promise<CliResult>
}

describe('three ml ingest --follow processes in one consumer group', () => {
  it(`store ${N} digits exactly once while members are killed ${KILLS} times`, async () => {
    const rng = seedrandom(SEED)
    const digits = await mnistDigits(N, 4000)
    assert.equal(new Set(digits.map((d) => d.key)).size, N, 'the fixture digits are distinct')
    const config = path.join(dir, 'ml.yaml')
    await writeFile(
      config,
      stringify({
        data: {
          // A short session so that a killed member's partitions move on quickly; small shards and
          // frequent commits so that kills and rebalances land between manifest and offset commits.
          sources: [{type: 'kafka', brokers: [brokers], topics: [TOPIC], groupId: GROUP, sessionTimeoutMs: 2000, rollIntervalMs: 150}],
          image: {width: 28, height: 28, channels: 1},
          store: 'store',
          shardSize: 20,
          concurrency: 2,
        },
      }),
    )
    const storeDir = path.join(dir, 'store')
    const start = (): Member => startCli(['ingest', '--follow', '--config', config])
    const members: Member[] = Array.from({length: MEMBERS}, start)
    let fenced = 0
    let restarts = 0
    // Members that stop by themselves are restarted too: a fenced one exits 5 by design.
    let watching = true
    const watch = async (i: number): Promise<void> => {
      while (watching) {
        const member = members[i]!
        const result = await member.done
        if (!watching || members[i] !== member) return
        if (result.signal === 'SIGKILL') return
        assert.equal(result.code, FENCED_EXIT, `member ${i} stopped by itself: code ${result.code}\n${result.stderr}`)
        assert.match(result.stderr, /INGEST_FENCED|another member of the consumer group/)
        fenced++
        members[i] = start()
      }
    }
    const watchers = members.map((_, i) => watch(i))

    const producing = (async () => {
      for (let i = 0; i < digits.length; i += 10) {
        await produce(kafka, TOPIC, digits.slice(i, i + 10).map((d) => digitMessage(d)))
        await new Promise((resolve) => setTimeout(resolve, 300))
      }
    })()
    const versions: number[] = []
    for (let kill = 0; kill < KILLS; kill++) {
      // Each kill costs a rebalance that waits for the dead member until the rebalance timeout (10 s):
      // kills come a few seconds apart, so that the group also gets work done in between.
      await new Promise((resolve) => setTimeout(resolve, 2000 + Math.floor(rng() * 4000)))
      const i = Math.floor(rng() * MEMBERS)
      const victim = members[i]!
      victim.child.kill('SIGKILL')
      await victim.done
      members[i] = start()
      restarts++
      watchers.push(watch(i))
      versions.push(await readManifest(storeDir).then((m) => m.version, () => 0))
    }
    await producing

    // Wait for the survivors to store everything, then stop them the clean way.
    const deadline = Date.now() + 120_000
    for (;;) {
      const total = await readManifest(storeDir).then((m) => m.total, () => 0)
      if (total >= N) break
      assert.ok(Date.now() < deadline, `only ${total} of ${N} stored after the producer finished`)
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    watching = false
    for (const member of members) member.child.kill('SIGTERM')
    const results = await Promise.all(members.map((m) => m.done))
    await Promise.all(watchers)
    // A member restarted just before is still loading and dies of the signal itself; the others
    // finish the messages in flight, commit and exit 0.
    const ended = results.map((r) => (r.signal === 'SIGTERM' ? 'starting' : r.code))
    for (const [i, result] of results.entries()) assert.ok([0, FENCED_EXIT, 'starting'].includes(ended[i]!), `member ${i} ended with ${result.code}: ${result.stderr}`)
    assert.ok(ended.includes(0), `at least one member stopped cleanly: ${ended.join(', ')}`)

    const manifest = await readManifest(storeDir)
    const stored = await storedKeys(storeDir)
    assert.equal(manifest.total, N, `total ${manifest.total}`)
    assert.equal(stored.size, N)
    assert.deepEqual(stored, new Map(digits.map((d) => [d.key, d.label])))
    const quarantine = await readFile(path.join(storeDir, 'quarantine.jsonl'), 'utf8').catch(() => '')
    assert.equal(quarantine.trim(), '', 'nothing quarantined')
    // Shards of killed members that never committed were cleaned up by the next member to start,
    // or are at most the last killed members' (no commit names them).
    const admin = kafka.admin()
    await admin.connect()
    const ends = await admin.fetchTopicOffsets(TOPIC)
    const [offsets] = await admin.fetchOffsets({groupId: GROUP, topics: [TOPIC]})
    await admin.disconnect()
    const end = Object.fromEntries(ends.map((e) => [String(e.partition), e.offset]))
    assert.deepEqual(manifest.sources?.kafka?.[GROUP]?.[TOPIC], end, 'the manifest records every partition at its end')
    const committed = Object.fromEntries(offsets!.partitions.map((p) => [String(p.partition), p.offset]))
    for (const [partition, offset] of Object.entries(committed)) assert.ok(BigInt(offset) <= BigInt(end[partition]!), `group offset of ${partition} within the topic`)
    console.log(`manifest versions after each kill: ${versions.join(' ')}; restarts ${restarts}, fenced exits ${fenced}; members at the end: ${ended.join(', ')}; final version ${manifest.version}`)
    assert.ok(versions.at(-1)! > 1, 'members committed while others were killed')
  })
})
