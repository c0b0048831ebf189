// The Kafka ingest scenarios against a real Apache Kafka broker (KRaft): end to end with the dead-letter
// topic, exactly-once across a crash between the manifest and the offset commit, two consumers
// rebalancing, a broker restart mid-ingest, `ml ingest publish`, and the TLS, mutual-TLS, SASL PLAIN
// and SCRAM listeners configured on the broker itself.
import assert from 'node:assert/strict'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, afterEach, before, describe, it} from 'node:test'
import type {Consumer, Kafka} from 'kafkajs'
import {stringify} from 'yaml'
import {validateConfig} from '../../src/lib/config/load.js'
import {runIngest, type IngestProgress} from '../../src/lib/data/ingest.js'
import {readManifest} from '../../src/lib/data/store.js'
import {UserError} from '../../src/lib/errors.js'
import {runJson} from '../support/cli.js'
import {mnistFolders, tempDir} from '../support/fixtures.js'
import {kafkaLog, testKafka} from '../support/kafka-client.js'
import {createTopics, digitMessage, kafkaConfig, mnistDigits, produce, storedKeys, type Digit} from '../support/kafka-fixtures.js'
import {deadLettersEndToEnd} from '../scenarios/kafka-dead-letters.js'
import {rebalanceLosesNothing} from '../scenarios/kafka-rebalance.js'
import {secureCliRoundTrip} from '../scenarios/kafka-secure-cli.js'
import {makeCertificates, type Certs} from '../support/certs.js'
import {kafkaSkip, RealKafka} from './support/kafka.js'
import {adminReads, committedOffsets, endOffsets, withAdmin} from '../support/kafka-admin.js'

const skip = kafkaSkip()
const USER = 'ingest'
const PASSWORD = 'correct-horse-battery'
const WRONG = 'wrong-staple'
const PASSWORD_ENV = 'ML_PEER_KAFKA_PASSWORD'
const PROMPT_MS = 5000
// Longer than a broker restart with kafkajs's reconnection backoff (~15-20 s here).
const STALL_MS = 90_000

let broker: RealKafka
let kafka: Kafka
let dir: string
let cleanup: () => Promise<void>
let digits: Digit[]
let certs: Certs
const consumers: Consumer[] = []

before(async () => {
  if (skip) return
  ;({dir, cleanup} = await tempDir('ml-peer-kafka-'))
  certs = await makeCertificates(path.join(dir, 'certs'))
  broker = await RealKafka.start({ca: certs.ca, server: certs.server, user: USER, password: PASSWORD})
  kafka = testKafka(broker.address())
  digits = await mnistDigits(240)
})
afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.disconnect().catch(() => {})))
})
after(async () => {
  await broker?.stop()
  await cleanup?.()
  delete process.env[PASSWORD_ENV]
  if (process.exitCode) console.error([...kafkaLog.slice(-40), ...(broker?.log.slice(-40) ?? [])].join('\n'))
})

let n = 0
function names() {
  const id = n++
  return {ws: path.join(dir, `ws${id}`), topic: `digits-${id}`, dead: `dead-${id}`, group: `g-${id}`}
}

/**
 * Resolves once `check(progress)` holds, fed from runIngest's onProgress. Fails instead of waiting
 * forever: when the run ends first, or when progress has not moved for STALL_MS (the run is then
 * aborted, and the error shows where it stood).
 */
function progressGate() {
  let latest: IngestProgress | undefined
  let ended: Error | undefined
  const waiters: Array<{check: (p: IngestProgress) => boolean; resolve: () => void; reject: (e: Error) => void}> = []
  const failAll = (error: Error) => {
    for (const w of waiters.splice(0)) w.reject(error)
  }
  let stall: NodeJS.Timeout | undefined
  let abort: (() => void) | undefined
  const watch = () => {
    clearTimeout(stall)
    if (waiters.length === 0) return
    stall = setTimeout(() => {
      abort?.()
      failAll(new Error(`ingest made no progress for ${STALL_MS / 1000} s; last progress: ${JSON.stringify(latest)}`))
    }, STALL_MS)
  }
  return {
    onProgress(p: IngestProgress) {
      const moved = latest === undefined || p.seen !== latest.seen
      latest = p
      for (const w of [...waiters]) {
        if (!w.check(p)) continue
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
      if (moved) watch()
    },
    /** The run the gate watches: its end fails the waiters, and a stall aborts it. */
    follow(run: Promise<unknown>, controller: AbortController) {
      abort = () => controller.abort()
      const end = (how: string) => () => {
        ended = new Error(`ingest ${how} before the awaited progress; last progress: ${JSON.stringify(latest)}`)
        clearTimeout(stall)
        failAll(ended)
      }
      run.then(end('ended'), end('failed'))
    },
    until(check: (p: IngestProgress) => boolean): Promise<void> {
      if (latest && check(latest)) return Promise.resolve()
      if (ended) return Promise.reject(ended)
      const waiting = new Promise<void>((resolve, reject) => waiters.push({check, resolve, reject}))
      watch()
      return waiting
    },
  }
}

describe('ingest from a real Kafka broker', {skip}, () => {
  it('ingests a topic end to end: corrupt and unlabelled messages go to the quarantine and the dead-letter topic', async () => {
    await deadLettersEndToEnd({...names(), kafka, brokers: [broker.address()], digits, reads: adminReads(kafka)})
  })

  it('names the config key when a topic does not exist, and the source does not create it', async () => {
    const {ws, group} = names()
    await assert.rejects(runIngest({config: kafkaConfig({brokers: [broker.address()], topics: ['no-such-topic'], groupId: group}), baseDir: ws}), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'SOURCE_NOT_FOUND')
      assert.match(error.message, /data\.sources\[0\]\.topics: topic no-such-topic does not exist/)
      return true
    })
    assert.ok(!(await withAdmin(kafka, (admin) => admin.listTopics())).includes('no-such-topic'))
  })

  it('stores nothing twice after a crash between the manifest commit and the offset commit', async () => {
    const {ws, topic, group} = names()
    await createTopics(kafka, [[topic, 2]])
    await produce(kafka, topic, digits.slice(0, 50).map((d) => digitMessage(d)))
    const config = kafkaConfig({brokers: [broker.address()], topics: [topic], groupId: group})
    assert.equal((await runIngest({config, baseDir: ws})).accepted, 50)

    // The crash: the offset commit never reached Kafka (the group has no offsets at all).
    await withAdmin(kafka, (admin) => admin.deleteGroups([group]))
    assert.deepEqual(await committedOffsets(kafka, group, topic), [undefined, undefined])
    await produce(kafka, topic, digits.slice(50, 60).map((d) => digitMessage(d)))
    const v2 = await runIngest({config, baseDir: ws})
    assert.deepEqual([v2.accepted, v2.duplicates, v2.total], [10, 0, 60])
    assert.deepEqual(await committedOffsets(kafka, group, topic), await endOffsets(kafka, topic))

    // Without the recorded offsets, the content hash still drops every repeat.
    const file = path.join(ws, 'store', 'manifest.json')
    const manifest = JSON.parse(await readFile(file, 'utf8'))
    delete manifest.sources
    await writeFile(file, JSON.stringify(manifest))
    await withAdmin(kafka, (admin) => admin.setOffsets({groupId: group, topic, partitions: [{partition: 0, offset: '0'}, {partition: 1, offset: '0'}]}))
    const v3 = await runIngest({config, baseDir: ws})
    assert.deepEqual([v3.accepted, v3.duplicates, v3.total], [0, 60, 60])
    assert.equal((await storedKeys(path.join(ws, 'store'))).size, 60)
  })

  it('drops the uncommitted work of partitions revoked by a rebalance, so that nothing is lost or stored twice', async () => {
    const {ws, topic, group} = names()
    await rebalanceLosesNothing({
      kafka,
      brokers: [broker.address()],
      ws,
      topic,
      group,
      digits,
      consumers,
      endOffsets: () => endOffsets(kafka, topic),
      committed: () => committedOffsets(kafka, group, topic),
    })
  })

  it('keeps ingesting across a broker restart (SIGKILL, then the same log dir and ports), storing each image once', async () => {
    const {ws, topic, group} = names()
    await createTopics(kafka, [[topic, 2]])
    const first = digits.slice(0, 100)
    const second = digits.slice(100, 200)
    await produce(kafka, topic, first.map((d) => digitMessage(d)))
    const gate = progressGate()
    const controller = new AbortController()
    const ingest = runIngest({
      config: kafkaConfig({brokers: [broker.address()], topics: [topic], groupId: group}, {shardSize: 25, concurrency: 2}),
      baseDir: ws,
      follow: true,
      rollIntervalMs: 200,
      signal: controller.signal,
      onProgress: gate.onProgress,
    })
    gate.follow(ingest, controller)
    await gate.until((p) => p.accepted >= 50)
    await broker.halt('SIGKILL')
    await broker.launch()
    await produce(kafka, topic, second.map((d) => digitMessage(d)))
    await gate.until((p) => p.accepted >= 200)
    controller.abort()
    const summary = await ingest
    assert.equal(summary.accepted, 200)
    assert.deepEqual(await storedKeys(path.join(ws, 'store')), new Map([...first, ...second].map((d) => [d.key, d.label])))
    const manifest = await readManifest(path.join(ws, 'store'))
    assert.deepEqual(manifest.sources?.kafka?.[group]?.[topic], Object.fromEntries((await endOffsets(kafka, topic)).map((o, p) => [String(p), String(o)])))
  })

  it('`ml ingest publish` puts a class-folder tree on a topic that ingests to the same dataset as the folder', async () => {
    const {train} = await mnistFolders(dir, 100, 0)
    const published = await runJson<{published: number; classes: number; topic: string}>(['ingest', 'publish', train, '--topic', 'pub', '--brokers', broker.address(), '--partitions', '3'])
    assert.equal(published.code, 0, published.stderr)
    assert.deepEqual([published.json.published, published.json.classes, published.json.topic], [100, 10, 'pub'])
    assert.equal((await endOffsets(kafka, 'pub')).length, 3)
    await writeFile(
      path.join(dir, 'pub.yaml'),
      stringify({data: {sources: [{type: 'kafka', brokers: [broker.address()], topics: ['pub'], groupId: 'pub-group', sessionTimeoutMs: 6000}], image: {width: 28, height: 28, channels: 1}, store: 'store-pub'}}),
    )
    const ingested = await runJson<{accepted: number}>(['ingest', '--config', path.join(dir, 'pub.yaml')])
    assert.equal(ingested.code, 0, ingested.stderr)
    assert.equal(ingested.json.accepted, 100)
    await runIngest({config: validateConfig({data: {sources: [{type: 'folder', path: train}], image: {width: 28, height: 28, channels: 1}, store: 'store-folder'}}), baseDir: dir})
    assert.equal((await readManifest(path.join(dir, 'store-pub'))).fingerprint, (await readManifest(path.join(dir, 'store-folder'))).fingerprint)
    assert.deepEqual(await storedKeys(path.join(dir, 'store-pub')), await storedKeys(path.join(dir, 'store-folder')))
  })
})

describe('TLS and SASL listeners of a real Kafka broker', {skip}, () => {
  const topic = 'secure-digits'
  before(async () => {
    await createTopics(kafka, [[topic, 2]])
    await produce(kafka, topic, digits.slice(0, 60).map((d) => digitMessage(d)))
  })

  /** Ingests `topic` over `listener` with the source settings `extra`; every digit is stored. */
  async function ingestsAll(listener: Parameters<RealKafka['address']>[0], extra: Record<string, unknown>): Promise<void> {
    const {ws, group} = names()
    const summary = await runIngest({config: kafkaConfig({brokers: [broker.address(listener)], topics: [topic], groupId: group, ...extra}), baseDir: ws})
    assert.equal(summary.accepted, 60)
    assert.deepEqual(await storedKeys(path.join(ws, 'store')), new Map(digits.slice(0, 60).map((d) => [d.key, d.label])))
  }

  async function failsPromptly(listener: Parameters<RealKafka['address']>[0], extra: Record<string, unknown>, check: (error: UserError) => void): Promise<void> {
    const {ws, group} = names()
    const started = performance.now()
    await assert.rejects(runIngest({config: kafkaConfig({brokers: [broker.address(listener)], topics: [topic], groupId: group, ...extra}), baseDir: ws}), (error: unknown) => {
      assert.ok(error instanceof UserError, String(error))
      check(error)
      return true
    })
    const elapsed = performance.now() - started
    assert.ok(elapsed < PROMPT_MS, `failed after ${elapsed.toFixed(0)} ms`)
  }

  it('TLS: trusts the broker through ssl.caFile; a certificate from another CA fails at once', async () => {
    await ingestsAll('TLS', {ssl: {caFile: '../certs/ca.pem'}})
    await failsPromptly('TLS', {ssl: {caFile: '../certs/other-ca.pem'}}, (error) => {
      assert.equal(error.code, 'KAFKA_TLS_FAILED')
      assert.match(error.message, /is not trusted: .*certificate/)
    })
  })

  it('mutual TLS: gets in with ssl.certFile and ssl.keyFile, is refused at once without them', async () => {
    await ingestsAll('MTLS', {ssl: {caFile: '../certs/ca.pem', certFile: '../certs/client.pem', keyFile: '../certs/client.key'}})
    await failsPromptly('MTLS', {ssl: {caFile: '../certs/ca.pem'}}, (error) => {
      assert.ok(['KAFKA_TLS_FAILED', 'KAFKA_UNREACHABLE'].includes(error.code), `${error.code}: ${error.message}`)
      assert.equal(error.exitCode, 5)
    })
  })

  it('SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 get in; a wrong password or a missing mechanism fails at once without showing the password', async () => {
    const source = (mechanism: string) => ({sasl: {mechanism, username: USER, passwordEnv: PASSWORD_ENV}})
    process.env[PASSWORD_ENV] = PASSWORD
    for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512']) await ingestsAll('SASL', source(mechanism))
    process.env[PASSWORD_ENV] = WRONG
    for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512']) {
      await failsPromptly('SASL', source(mechanism), (error) => {
        assert.equal(error.code, 'KAFKA_AUTH_FAILED')
        assert.equal(error.exitCode, 5)
        assert.match(error.message, new RegExp(`^data\\.sources\\[0\\]\\.sasl: SASL authentication as user ${USER} \\(${mechanism}\\) failed on ${broker.address('SASL')}`))
        assert.ok(!error.message.includes(WRONG) && !JSON.stringify(error.details).includes(WRONG), error.message)
      })
    }
    process.env[PASSWORD_ENV] = PASSWORD
    await failsPromptly('SASL256', source('scram-sha-512'), (error) => {
      assert.equal(error.code, 'KAFKA_AUTH_FAILED')
      assert.match(error.message, /\(scram-sha-512\) failed on /)
    })
  })

  it('`ml ingest publish` and `ml ingest` over SASL_SSL take ssl and sasl from the config; a wrong password exits 5', async () => {
    await secureCliRoundTrip({dir, digitsDir: path.join(dir, 'secure'), broker: broker.address('SASLTLS'), mechanism: 'scram-sha-512', user: USER, password: PASSWORD, wrong: WRONG, passwordEnv: PASSWORD_ENV})
  })
})

