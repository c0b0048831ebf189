// The one place ml builds kafkajs clients: brokers, TLS, SASL with the password taken from an
// environment variable, and kafkajs' own logging kept off stdout (ML_KAFKA_LOG=debug|info|warn|error).
import {Kafka, logLevel, type KafkaConfig, type SASLOptions} from 'kafkajs'
import type {KafkaSourceConfig} from '../config/schema.js'
import {UserError} from '../ui/errors.js'

export type KafkaConnection = Pick<KafkaSourceConfig, 'brokers' | 'clientId' | 'ssl' | 'sasl'>

const LEVELS: Record<string, logLevel> = {
  debug: logLevel.DEBUG,
  info: logLevel.INFO,
  warn: logLevel.WARN,
  error: logLevel.ERROR,
}

/** kafkajs logs JSON to stdout by default, which would break `--json`; this sends it to stderr, if asked for. */
function logSettings(): Pick<KafkaConfig, 'logLevel' | 'logCreator'> {
  const wanted = LEVELS[(process.env.ML_KAFKA_LOG ?? '').toLowerCase()]
  if (wanted === undefined) return {logLevel: logLevel.NOTHING}
  return {
    logLevel: wanted,
    logCreator: () => (entry) => {
      process.stderr.write(`kafka ${entry.namespace}: ${entry.log.message}${entry.log.error ? ` (${String(entry.log.error)})` : ''}\n`)
    },
  }
}

/** A kafkajs client for `connection`; `key` names the config entry in errors (data.sources[0]). */
export function createKafka(connection: KafkaConnection, key: string, defaultClientId = 'ml-ingest'): Kafka {
  let sasl: SASLOptions | undefined
  if (connection.sasl) {
    const {mechanism, username, passwordEnv} = connection.sasl
    const password = process.env[passwordEnv]
    if (password === undefined || password === '') {
      throw new UserError(`${key}.sasl.passwordEnv: environment variable ${passwordEnv} is not set`, {
        code: 'KAFKA_PASSWORD_MISSING',
        exit: 'usage',
        suggestions: [`export ${passwordEnv}=... before running ml (the password is never read from the config file).`],
      })
    }
    sasl = {mechanism, username, password} as SASLOptions
  }
  return new Kafka({
    clientId: connection.clientId ?? defaultClientId,
    brokers: connection.brokers,
    ...(connection.ssl ? {ssl: true} : {}),
    ...(sasl ? {sasl} : {}),
    connectionTimeout: 3000,
    requestTimeout: 30_000,
    retry: {initialRetryTime: 200, maxRetryTime: 5000, retries: 8},
    ...logSettings(),
  })
}

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error))

/** Turns a failure to talk to the brokers into the documented "remote service failed" error. */
export function kafkaUnavailable(brokers: string[], error: unknown): UserError {
  if (error instanceof UserError) return error
  return new UserError(`Kafka brokers ${brokers.join(', ')} failed: ${describe(error)}`, {
    code: 'KAFKA_UNAVAILABLE',
    exit: 'service',
    cause: error,
    details: {brokers},
    suggestions: ['Check that the brokers are reachable from here, and the ssl/sasl settings. ML_KAFKA_LOG=debug shows the client log.'],
  })
}
