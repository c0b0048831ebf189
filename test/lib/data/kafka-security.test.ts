// TLS and SASL of the kafka source and `ml ingest publish` against the test broker speaking them: a
// broker certificate from a CA made here, mutual TLS, SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, and the failures
// (wrong CA, no client certificate, bad files, wrong password) ending at once with what to fix.
import assert from 'node:assert/strict'
import {once} from 'node:events'
import net from 'node:net'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import type {KafkaConfig} from 'kafkajs'
import {runIngest} from '../../../src/lib/data/ingest.js'
import {UserError} from '../../../src/lib/errors.js'
import {secureCliRoundTrip} from '../../scenarios/kafka-secure-cli.js'
import {makeCertificates, type Certs} from '../../support/certs.js'
import {tempDir} from '../../support/fixtures.js'
import {API, KafkaBroker, VERSIONS} from '../../support/kafka-broker.js'
import {kafkaLog, testKafka} from '../../support/kafka-client.js'
import {createTopics, digitMessage, kafkaConfig, mnistDigits, produce, storedKeys, type Digit} from '../../support/kafka-fixtures.js'
import {Writer} from '../../support/kafka-wire.js'

const USER = 'ingest'
const PASSWORD = 'correct-horse-battery'
const WRONG = 'wrong-staple'
const PASSWORD_ENV = 'ML_TEST_KAFKA_PASSWORD'
// kafkajs would retry a connection error for about 20 s with the product's settings: a failure
// that ends well within this was reported without retrying.
const PROMPT_MS = 5000

const {dir, cleanup} = await tempDir('ml-kafka-security-')
let certs: Certs
let tlsSkip: string | undefined
try {
  certs = await makeCertificates(path.join(dir, 'certs'))
} catch (error) {
  tlsSkip = `openssl could not make test certificates (${(error as Error).message.split('\n')[0]}): TLS is not tested`
}

const brokers: KafkaBroker[] = []
let digits: Digit[]

before(async () => {
  digits = await mnistDigits(60)
})
after(async () => {
  await Promise.all(brokers.map((b) => b.stop()))
  await cleanup()
  delete process.env[PASSWORD_ENV]
  if (process.exitCode) console.error(kafkaLog.slice(-40).join('\n'))
})

async function startBroker(options: ConstructorParameters<typeof KafkaBroker>[0]): Promise<KafkaBroker> {
  const broker = await KafkaBroker.create({autoCreateTopics: false, ...options})
  brokers.push(broker)
  return broker
}

let n = 0
/** A fresh workspace folder (next to certs/), topic and group for one ingest. */
function names() {
  const id = n++
  return {ws: path.join(dir, `ws${id}`), topic: `digits-${id}`, group: `g-${id}`}
}

/** Creates `topic` with 2 partitions and fills it with every digit, through a client set up with `security`. */
async function seed(broker: KafkaBroker, topic: string, security: Pick<KafkaConfig, 'ssl' | 'sasl'>): Promise<void> {
  const kafka = testKafka(broker.address, 'ml-seed', security)
  await createTopics(kafka, [[topic, 2]])
  await produce(kafka, topic, digits.map((d) => digitMessage(d)))
}

/** Ingests `topic` with the source settings `extra` and checks that every digit was stored. */
async function ingestsAll(broker: KafkaBroker, topic: string, extra: Record<string, unknown>): Promise<void> {
  const {ws, group} = names()
  const summary = await runIngest({config: kafkaConfig({brokers: [broker.address], topics: [topic], groupId: group, ...extra}), baseDir: ws})
  assert.equal(summary.accepted, digits.length)
  assert.deepEqual(await storedKeys(path.join(ws, 'store')), new Map(digits.map((d) => [d.key, d.label])))
}

/** Ingesting with `extra` fails within PROMPT_MS with a UserError that `check` accepts. */
async function failsPromptly(broker: KafkaBroker, topic: string, extra: Record<string, unknown>, check: (error: UserError) => void): Promise<void> {
  const {ws, group} = names()
  const started = performance.now()
  await assert.rejects(runIngest({config: kafkaConfig({brokers: [broker.address], topics: [topic], groupId: group, ...extra}), baseDir: ws}), (error: unknown) => {
    assert.ok(error instanceof UserError, String(error))
    check(error)
    return true
  })
  const elapsed = performance.now() - started
  assert.ok(elapsed < PROMPT_MS, `failed after ${elapsed.toFixed(0)} ms`)
}

describe('kafka source over TLS', {skip: tlsSkip}, () => {
  let server: KafkaBroker
  let mutual: KafkaBroker
  const topic = 'tls-digits'

  before(async () => {
    server = await startBroker({tls: certs.server})
    mutual = await startBroker({tls: {...certs.server, clientCa: certs.ca}})
    await seed(server, topic, {ssl: {ca: [certs.ca]}})
    await seed(mutual, topic, {ssl: {ca: [certs.ca], ...certs.client}})
  })

  it('ingests from a broker whose CA is ssl.caFile, relative to the config folder', async () => {
    await ingestsAll(server, topic, {ssl: {caFile: '../certs/ca.pem'}})
  })

  it('mutual TLS: gets in with ssl.certFile and ssl.keyFile, is refused at once without them', async () => {
    await ingestsAll(mutual, topic, {ssl: {caFile: '../certs/ca.pem', certFile: '../certs/client.pem', keyFile: '../certs/client.key'}})
    await failsPromptly(mutual, topic, {ssl: {caFile: '../certs/ca.pem'}}, (error) => {
      assert.equal(error.code, 'KAFKA_TLS_FAILED')
      assert.equal(error.exitCode, 5)
      assert.match(error.message, new RegExp(`^data\\.sources\\[0\\]\\.ssl: Kafka broker ${mutual.address} refused the TLS connection`))
      assert.match(error.suggestions.join(' '), /ssl\.certFile and ssl\.keyFile/)
    })
  })

  it('a broker certificate from another CA (or not among the system CAs) fails at once; rejectUnauthorized: false lets it in', async () => {
    for (const ssl of [{caFile: '../certs/other-ca.pem'}, true]) {
      await failsPromptly(server, topic, {ssl}, (error) => {
        assert.equal(error.code, 'KAFKA_TLS_FAILED')
        assert.equal(error.exitCode, 5)
        assert.match(error.message, new RegExp(`^data\\.sources\\[0\\]\\.ssl: the certificate of Kafka broker ${server.address} is not trusted: .*certificate`))
        assert.match(error.suggestions.join(' '), /ssl\.caFile/)
      })
    }
    await ingestsAll(server, topic, {ssl: {caFile: '../certs/other-ca.pem', rejectUnauthorized: false}})
  })

  it('names the key and the path of a TLS file that cannot be used, before connecting', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{caFile: 'missing.pem'}, /^data\.sources\[0\]\.ssl\.caFile: \S+missing\.pem cannot be read: ENOENT/],
      [{caFile: '../certs/ca.key'}, /^data\.sources\[0\]\.ssl\.caFile: \S+ca\.key is not a PEM certificate/],
      [{certFile: '../certs/client.pem', keyFile: '../certs/other-ca.key'}, /^data\.sources\[0\]\.ssl\.keyFile: \S+other-ca\.key is not the private key of certFile \S+client\.pem$/],
    ]
    for (const [ssl, message] of cases) {
      await failsPromptly(server, topic, {ssl}, (error) => {
        assert.equal(error.code, 'KAFKA_TLS_FILE')
        assert.equal(error.exitCode, 3)
        assert.match(error.message, message)
      })
    }
  })
})

describe('kafka source with SASL', () => {
  let broker: KafkaBroker
  const topic = 'sasl-digits'
  const source = (mechanism: string) => ({sasl: {mechanism, username: USER, passwordEnv: PASSWORD_ENV}})

  before(async () => {
    broker = await startBroker({sasl: {username: USER, password: PASSWORD}})
    await seed(broker, topic, {sasl: {mechanism: 'scram-sha-256', username: USER, password: PASSWORD}})
  })

  it('ingests with SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512', async () => {
    process.env[PASSWORD_ENV] = PASSWORD
    for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512']) await ingestsAll(broker, topic, source(mechanism))
  })

  it('a wrong password or a mechanism the broker lacks fails at once, naming SASL and the user, never the password', async () => {
    process.env[PASSWORD_ENV] = WRONG
    for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512']) {
      await failsPromptly(broker, topic, source(mechanism), (error) => {
        assert.equal(error.code, 'KAFKA_AUTH_FAILED')
        assert.equal(error.exitCode, 5)
        assert.match(error.message, new RegExp(`^data\\.sources\\[0\\]\\.sasl: SASL authentication as user ${USER} \\(${mechanism}\\) failed on ${broker.address}: .*invalid`, 'i'))
        assert.ok(!error.message.includes(WRONG) && !JSON.stringify(error.details).includes(WRONG), error.message)
      })
    }
    process.env[PASSWORD_ENV] = PASSWORD
    const without512 = await startBroker({sasl: {username: USER, password: PASSWORD, mechanisms: ['PLAIN', 'SCRAM-SHA-256']}})
    await failsPromptly(without512, topic, source('scram-sha-512'), (error) => {
      assert.equal(error.code, 'KAFKA_AUTH_FAILED')
      assert.match(error.message, /\(scram-sha-512\) failed on .*does not support the requested SASL mechanism/)
    })
  })

  it('drops a connection that sends anything but ApiVersions and the SASL exchange before authenticating', async () => {
    const frame = (apiKey: number, version: number, correlationId: number, body: Buffer) => {
      const request = new Writer().int16(apiKey).int16(version).int32(correlationId).string('raw').raw(body).toBuffer()
      return new Writer().int32(request.length).raw(request).toBuffer()
    }
    const socket = net.connect(broker.port, broker.host)
    await once(socket, 'connect')
    let received = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])))
    socket.write(frame(API.ApiVersions, VERSIONS.ApiVersions[0], 1, Buffer.alloc(0)))
    while (received.length < 4 || received.length < 4 + received.readInt32BE(0)) await once(socket, 'data')
    assert.equal(received.readInt32BE(4), 1, 'ApiVersions is answered before authentication')
    const answered = received.length
    socket.write(frame(API.Metadata, VERSIONS.Metadata[0], 2, new Writer().int32(-1).bool(false).toBuffer()))
    await once(socket, 'close')
    assert.equal(received.length, answered, 'Metadata got no answer, only the connection closed')
  })
})

describe('ml ingest publish and ml ingest over TLS + SASL (CLI)', {skip: tlsSkip}, () => {
  it('publish and ingest take ssl and sasl from the config; a wrong password exits 5 without showing it', async () => {
    const broker = await startBroker({tls: certs.server, sasl: {username: USER, password: PASSWORD}})
    await secureCliRoundTrip({dir, digitsDir: dir, broker: broker.address, mechanism: 'scram-sha-256', user: USER, password: PASSWORD, wrong: WRONG, passwordEnv: PASSWORD_ENV})
  })
})
