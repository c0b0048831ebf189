// The one place ml builds kafkajs clients: brokers, TLS (own CA, client certificate), SASL with the
// password taken from an environment variable, and kafkajs' own logging kept off stdout
// (ML_KAFKA_LOG=debug|info|warn|error). Its failures come back as errors that say what to fix.
import {createPrivateKey, X509Certificate} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import net from 'node:net'
import tls from 'node:tls'
import {Kafka, logLevel, type ISocketFactory, type KafkaConfig, type SASLOptions} from 'kafkajs'
import {resolvePath} from '../config/load.js'
import type {KafkaSourceConfig} from '../config/schema.js'
import {UserError} from '../errors.js'

export type KafkaConnection = Pick<KafkaSourceConfig, 'brokers' | 'clientId' | 'ssl' | 'sasl'>

/** Where a connection's settings come from. */
export interface KafkaOrigin {
  /** The config entry errors name (data.sources[0]). */
  key: string
  /** Folder relative file names (ssl.caFile...) are resolved against; default the working directory. */
  baseDir?: string
}

/** A kafkajs client, and the means to explain its failures. */
export interface KafkaClient {
  kafka: Kafka
  /** A failure to talk to the brokers as a UserError; refused certificates and credentials say so. */
  failed(error: unknown): UserError
}

const LEVELS: Record<string, logLevel> = {
  debug: logLevel.DEBUG,
  info: logLevel.INFO,
  warn: logLevel.WARN,
  error: logLevel.ERROR,
}

// kafkajs' own default socket keep-alive.
const KEEP_ALIVE_MS = 60_000

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

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error))

function saslOptions(sasl: NonNullable<KafkaConnection['sasl']>, key: string): SASLOptions {
  const {mechanism, username, passwordEnv} = sasl
  const password = process.env[passwordEnv]
  if (password === undefined || password === '') {
    throw new UserError(`${key}.sasl.passwordEnv: environment variable ${passwordEnv} is not set`, {
      code: 'KAFKA_PASSWORD_MISSING',
      exit: 'usage',
      suggestions: [`export ${passwordEnv}=... before running ml (the password is never read from the config file).`],
    })
  }
  return {mechanism, username, password} as SASLOptions
}

type TlsFile = 'caFile' | 'certFile' | 'keyFile'

/**
 * The TLS options of `ssl`, its files read and checked now: inside kafkajs a bad file would be
 * one more connection error, retried until the retries run out, and naming no file.
 */
async function tlsOptions(ssl: Exclude<KafkaConnection['ssl'], false | undefined>, origin: KafkaOrigin): Promise<tls.ConnectionOptions> {
  if (ssl === true) return {}
  const problem = (name: TlsFile, file: string, why: string, cause?: unknown) =>
    new UserError(`${origin.key}.ssl.${name}: ${file} ${why}`, {
      code: 'KAFKA_TLS_FILE',
      exit: 'data',
      cause,
      details: {key: `${origin.key}.ssl.${name}`, file},
      suggestions: [`Relative paths are resolved against ${origin.baseDir ?? 'the working directory'}.`],
    })
  const read = async (name: TlsFile) => {
    const given = ssl[name]
    if (given === undefined) return undefined
    const file = resolvePath({baseDir: origin.baseDir ?? process.cwd()}, given)
    try {
      return {name, file, bytes: await readFile(file)}
    } catch (error) {
      throw problem(name, file, `cannot be read: ${describe(error)}`, error)
    }
  }
  const parse = <T>(entry: {name: TlsFile; file: string; bytes: Buffer}, what: string, as: (bytes: Buffer) => T): T => {
    try {
      return as(entry.bytes)
    } catch (error) {
      throw problem(entry.name, entry.file, `is not ${what}: ${describe(error)}`, error)
    }
  }
  const [ca, cert, key] = await Promise.all([read('caFile'), read('certFile'), read('keyFile')])
  if (ca) parse(ca, 'a PEM certificate', (bytes) => new X509Certificate(bytes))
  // The schema lets certFile and keyFile come only together.
  if (cert && key) {
    const certificate = parse(cert, 'a PEM certificate', (bytes) => new X509Certificate(bytes))
    const privateKey = parse(key, 'an unencrypted PEM private key', (bytes) => createPrivateKey(bytes))
    if (!certificate.checkPrivateKey(privateKey)) throw problem('keyFile', key.file, `is not the private key of certFile ${cert.file}`)
  }
  return {rejectUnauthorized: ssl.rejectUnauthorized, ...(ca ? {ca: ca.bytes} : {}), ...(cert && key ? {cert: cert.bytes, key: key.bytes} : {})}
}

/** A TLS failure no retry mends. */
interface TlsRefusal {
  broker: string
  /** True when we did not trust the broker's certificate; false when the broker refused us (a TLS alert). */
  untrusted: boolean
  /** What was wrong, e.g. "unable to verify the first certificate", "tlsv13 alert certificate required". */
  reason: string
  error: NodeJS.ErrnoException
}

function tlsRefused(key: string, {broker, untrusted, reason, error}: TlsRefusal): UserError {
  return new UserError(
    untrusted
      ? `${key}.ssl: the certificate of Kafka broker ${broker} is not trusted: ${reason}`
      : `${key}.ssl: Kafka broker ${broker} refused the TLS connection: ${reason}`,
    {
      code: 'KAFKA_TLS_FAILED',
      exit: 'service',
      cause: error,
      details: {broker, code: error.code},
      suggestions: [
        untrusted
          ? "Set ssl.caFile to the CA that signed the brokers' certificates, and name the brokers as their certificates do."
          : 'If the broker requires client certificates, set ssl.certFile and ssl.keyFile to one signed by a CA it trusts; check that the port speaks TLS.',
      ],
    },
  )
}

// kafkajs reports these protocol errors of the SASL handshake as they are, not as authentication errors.
const SASL_ERROR_TYPES = new Set(['SASL_AUTHENTICATION_FAILED', 'UNSUPPORTED_SASL_MECHANISM', 'ILLEGAL_SASL_STATE'])

/** The SASL failure in a kafkajs error or the errors it wraps, if that is what it is. */
function saslFailure(error: unknown): Error | undefined {
  for (let e = error; e instanceof Error; e = e.cause) {
    if (e.name === 'KafkaJSSASLAuthenticationError' || SASL_ERROR_TYPES.has(String((e as {type?: unknown}).type))) return e
  }
  return undefined
}

/** A kafkajs client for `connection`; errors name the config entry `origin.key` (data.sources[0]). */
export async function createKafka(connection: KafkaConnection, origin: KafkaOrigin, defaultClientId = 'ml-ingest'): Promise<KafkaClient> {
  const sasl = connection.sasl ? saslOptions(connection.sasl, origin.key) : undefined
  const ssl = connection.ssl ? await tlsOptions(connection.ssl, origin) : undefined
  let refused: TlsRefusal | undefined
  // kafkajs' default socket factory, which also notes a refused certificate: kafkajs would retry
  // that like any connection error, for the whole retry budget (about 20 s) and to no avail.
  const socketFactory: ISocketFactory = ({host, port, ssl: options, onConnect}) => {
    const socket = tls.connect({host, port, ...(net.isIP(host) ? {} : {servername: host}), ...options}, onConnect)
    socket.setKeepAlive(true, KEEP_ALIVE_MS)
    socket.on('error', (error: NodeJS.ErrnoException & {reason?: string}) => {
      // authorizationError: our verdict on the broker's certificate; ERR_SSL_*: an alert from the
      // broker, whose message is an OpenSSL trace line and whose reason says what it objected to.
      const untrusted = Boolean(socket.authorizationError)
      if (untrusted || error.code?.startsWith('ERR_SSL_')) {
        refused ??= {broker: `${host}:${port}`, untrusted, reason: untrusted ? error.message : (error.reason ?? error.message), error}
      }
    })
    return socket
  }
  const kafka = new Kafka({
    clientId: connection.clientId ?? defaultClientId,
    // kafkajs has no say in which errors it retries, but it rebuilds its bootstrap connection from
    // this list after a connection error and gives up at once when the list is empty: so a refused
    // certificate ends the attempt now, and failed() reports the refusal.
    // Without TLS nothing can be refused, and the plain list is kept.
    brokers: ssl ? () => (refused ? [] : connection.brokers) : connection.brokers,
    ...(ssl ? {ssl, socketFactory} : {}),
    ...(sasl ? {sasl} : {}),
    connectionTimeout: 3000,
    requestTimeout: 30_000,
    retry: {initialRetryTime: 200, maxRetryTime: 5000, retries: 8},
    ...logSettings(),
  })
  const brokers = connection.brokers.join(', ')
  const failed = (error: unknown): UserError => {
    if (error instanceof UserError) return error
    if (refused) return tlsRefused(origin.key, refused)
    const refusal = saslFailure(error)
    if (connection.sasl && refusal) {
      const {mechanism, username, passwordEnv} = connection.sasl
      return new UserError(`${origin.key}.sasl: SASL authentication as user ${username} (${mechanism}) failed on ${brokers}: ${refusal.message}`, {
        code: 'KAFKA_AUTH_FAILED',
        exit: 'service',
        cause: error,
        details: {brokers: connection.brokers, username, mechanism},
        suggestions: [`Check the username, the password in ${passwordEnv} and that the brokers offer ${mechanism}.`],
      })
    }
    return new UserError(`Kafka brokers ${brokers} failed: ${describe(error)}`, {
      code: 'KAFKA_UNAVAILABLE',
      exit: 'service',
      cause: error,
      details: {brokers: connection.brokers},
      suggestions: ['Check that the brokers are reachable from here, and the ssl/sasl settings. ML_KAFKA_LOG=debug shows the client log.'],
    })
  }
  return {kafka, failed}
}
