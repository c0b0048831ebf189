// `ml ingest publish` and `ml ingest` over SASL on TLS, written once and run against the in-repo broker
// (test/lib/data/kafka-security.test.ts) and a real Kafka (test/peers/kafka-ingest.test.ts): both take
// ssl and sasl from the config (paths relative to the config's folder, which is also the working
// directory here, since publish resolves against the latter), and a wrong password exits 5 with
// KAFKA_AUTH_FAILED without showing the password anywhere.
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {stringify} from 'yaml'
import {runJson} from '../support/cli.js'
import {mnistFolders} from '../support/fixtures.js'

export interface SecureCli {
  /** The working directory, with the CA at certs/ca.pem. */
  dir: string
  /** Where the 40 MNIST digits to publish are written. */
  digitsDir: string
  /** host:port of the SASL over TLS listener. */
  broker: string
  mechanism: 'scram-sha-256' | 'scram-sha-512'
  user: string
  password: string
  wrong: string
  /** The environment variable the config names for the password. */
  passwordEnv: string
}

export async function secureCliRoundTrip(s: SecureCli): Promise<void> {
  const {train} = await mnistFolders(s.digitsDir, 40, 0)
  const config = path.join(s.dir, 'secure.yaml')
  const source = {type: 'kafka', brokers: [s.broker], topics: ['secure'], groupId: 'secure', ssl: {caFile: 'certs/ca.pem'}, sasl: {mechanism: s.mechanism, username: s.user, passwordEnv: s.passwordEnv}}
  await writeFile(config, stringify({data: {sources: [source], image: {width: 28, height: 28, channels: 1}, store: 'store-secure'}}))
  const options = (password: string) => ({cwd: s.dir, env: {[s.passwordEnv]: password}})

  const published = await runJson<{published: number}>(['ingest', 'publish', train, '--topic', 'secure', '--partitions', '2', '--config', config], options(s.password))
  assert.equal(published.code, 0, published.stderr)
  assert.equal(published.json.published, 40)

  const ingested = await runJson<{accepted: number}>(['ingest', '--config', config], options(s.password))
  assert.equal(ingested.code, 0, ingested.stderr)
  assert.equal(ingested.json.accepted, 40)

  const refused = await runJson<{error: {code: string; message: string}}>(['ingest', '--config', config], options(s.wrong))
  assert.equal(refused.code, 5)
  assert.equal(refused.json.error.code, 'KAFKA_AUTH_FAILED')
  assert.match(refused.json.error.message, new RegExp(`SASL authentication as user ${s.user} \\(${s.mechanism}\\)`))
  assert.ok(!JSON.stringify(refused.json).includes(s.wrong) && !refused.stderr.includes(s.wrong))
}
