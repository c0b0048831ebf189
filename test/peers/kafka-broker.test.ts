// The real-Kafka harness itself: a one-node KRaft broker starts on loopback, serves kafkajs, survives
// a restart with its log and committed offsets, stops cleanly, and never outlives the process that
// started it, even when that process is SIGKILLed.
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {once} from 'node:events'
import {readFileSync} from 'node:fs'
import path from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {after, before, describe, it} from 'node:test'
import {testKafka} from '../support/kafka-client.js'
import {createTopics, produce} from '../support/kafka-fixtures.js'
import {kafkaSkip, RealKafka} from './support/kafka.js'
import {withAdmin} from '../support/kafka-admin.js'

const skip = kafkaSkip()
const here = path.dirname(fileURLToPath(import.meta.url))

/** The process state letter from /proc (Z: a zombie), or undefined once the process is gone. */
function state(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0]
  } catch {
    return undefined
  }
}

/** Resolves once `pid` is gone or a zombie; fails after `ms`. */
async function dead(pid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (state(pid) !== undefined && state(pid) !== 'Z') {
    if (Date.now() > deadline) throw new Error(`process ${pid} still alive after ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe('a real Apache Kafka broker (KRaft, one node)', {skip}, () => {
  let kafka: RealKafka
  before(async () => {
    kafka = await RealKafka.start()
  })
  after(async () => {
    await kafka?.stop()
  })

  it('serves kafkajs, and keeps the log and committed offsets across a restart on the same ports', async () => {
    const client = testKafka(kafka.address())
    await createTopics(client, [['hello', 2]])
    await produce(client, 'hello', Array.from({length: 10}, (_, i) => ({value: Buffer.from(`m${i}`), partition: i % 2})))
    await withAdmin(client, (admin) => admin.setOffsets({groupId: 'g', topic: 'hello', partitions: [{partition: 0, offset: '3'}]}))
    const jvm = kafka.pid!
    await kafka.halt()
    assert.equal(state(jvm), undefined, 'the JVM exited and was reaped')
    await kafka.launch()
    const ends = await withAdmin(client, (admin) => admin.fetchTopicOffsets('hello'))
    const [committed] = await withAdmin(client, (admin) => admin.fetchOffsets({groupId: 'g', topics: ['hello']}))
    assert.deepEqual(ends.map((e) => [e.partition, e.high]).sort(), [[0, '5'], [1, '5']])
    assert.equal(committed!.partitions.find((p) => p.partition === 0)!.offset, '3')
  })

  it('dies with the process that started it, even one killed with SIGKILL', async () => {
    const child = spawn(process.execPath, [path.join(here, 'support', 'kafka-main.js')], {stdio: ['ignore', 'pipe', 'inherit']})
    const [line] = (await once(createInterface({input: child.stdout!}), 'line')) as [string]
    const {pid, address} = JSON.parse(line) as {pid: number; address: string}
    assert.ok(state(pid), 'the JVM is running')
    // It answers before the kill...
    const admin = testKafka(address).admin()
    await admin.connect()
    assert.deepEqual(await admin.listTopics(), [])
    await admin.disconnect()
    child.kill('SIGKILL')
    await once(child, 'exit')
    await dead(pid, 10_000)
  })
})
