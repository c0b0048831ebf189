// Ingest scaled out: three `ml ingest --follow` processes in one consumer group write one dataset
// store while a producer writes N digits; one member at a time is killed with SIGKILL at seeded
// random moments and started again. The dataset must end with each digit exactly once, and the
// manifest and the group's offsets at the end of every partition.
import assert from 'node:assert/strict'
import type {ChildProcess} from 'node:child_process'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import type {Kafka} from 'kafkajs'
import seedrandom from 'seedrandom'
import {readManifest} from '../../src/lib/data/store.js'
import {assertStoredOnce, distinctDigits, manifestVersion, writeStreamConfig} from '../scenarios/ingest-kill.js'
import {startCli, type CliResult} from '../support/cli.js'
import {tempDir} from '../support/fixtures.js'
import {committedOffsets, endOffsets} from '../support/kafka-admin.js'
import {startBrokerProcess, type BrokerProcess} from '../support/kafka-broker-process.js'
import {testKafka} from '../support/kafka-client.js'
import {digitMessage, produce} from '../support/kafka-fixtures.js'

const N = 600
const MEMBERS = 3
const KILLS = 6
const PARTITIONS = 6
const TOPIC = 'digits'
const GROUP = 'group-test'
const SEED = 'ingest-group-1'
/** Exit code of a member fenced out of a commit (INGEST_FENCED, exit kind "service"): restarted like a killed one. */
const FENCED_EXIT = 5

let broker: BrokerProcess
let kafka: Kafka
let dir: string
let cleanup: () => Promise<void>

before(async () => {
  ;({dir, cleanup} = await tempDir('ml-ingest-group-'))
  // Slow offset commits widen the window between a manifest commit and its offset commit.
  broker = await startBrokerProcess([[TOPIC, PARTITIONS]], {OffsetCommit: 150})
  kafka = testKafka(broker.brokers)
})
after(async () => {
  await broker?.stop()
  await cleanup?.()
})

interface Member {
  child: ChildProcess
  done: Promise<CliResult>
}

describe('three ml ingest --follow processes in one consumer group', () => {
  it(`store ${N} digits exactly once while members are killed ${KILLS} times`, async () => {
    const rng = seedrandom(SEED)
    const digits = await distinctDigits(N, 4000)
    // A short session so that a killed member's partitions move on quickly; small shards and
    // frequent commits so that kills and rebalances land between manifest and offset commits.
    const source = {type: 'kafka', brokers: [broker.brokers], topics: [TOPIC], groupId: GROUP, sessionTimeoutMs: 2000, rollIntervalMs: 150}
    const config = await writeStreamConfig(dir, source, 20)
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
      versions.push(await manifestVersion(storeDir))
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

    // Shards of killed members that never committed were cleaned up by the next member to start,
    // or are at most the last killed members' (no commit names them).
    const manifest = await assertStoredOnce(storeDir, digits)
    const ends = await endOffsets(kafka, TOPIC)
    assert.deepEqual(manifest.sources?.kafka?.[GROUP]?.[TOPIC], Object.fromEntries(ends.map((o, p) => [String(p), String(o)])), 'the manifest records every partition at its end')
    const committed = await committedOffsets(kafka, GROUP, TOPIC)
    assert.equal(committed.length, PARTITIONS)
    for (const [partition, offset] of committed.entries()) assert.ok((offset ?? 0) <= ends[partition]!, `group offset of ${partition} within the topic`)
    console.log(`manifest versions after each kill: ${versions.join(' ')}; restarts ${restarts}, fenced exits ${fenced}; members at the end: ${ended.join(', ')}; final version ${manifest.version}`)
    assert.ok(versions.at(-1)! > 1, 'members committed while others were killed')
  })
})
