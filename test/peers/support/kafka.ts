// A real Apache Kafka broker for the peer tests: one KRaft node (broker and controller) from the jars
// that scripts/peers/kafka.sh put in the cache, on loopback ports picked here, with a fresh log dir.
// Besides PLAINTEXT it can open TLS, mutual-TLS and SASL (PLAIN, SCRAM-SHA-256/512) listeners.
import {spawn, type ChildProcess} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {once} from 'node:events'
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {createInterface} from 'node:readline'
import {CACHE, freePort, peerSkip, stampOf} from './peers.js'

export const KAFKA_LIBS = path.join(CACHE, `kafka-${stampOf('kafka-pom.xml')}`, 'libs')
/** Why the Kafka tests cannot run here, or undefined (throws under CI=true). */
export const kafkaSkip = (): string | undefined => peerSkip('Apache Kafka', path.join(KAFKA_LIBS, '..', '.complete'), 'kafka.sh')

const READY = /Kafka Server started/
const START_TIMEOUT_MS = 180_000

export interface KafkaSecurity {
  /** PEM: the CA clients are checked against (mutual TLS), and the broker's certificate and key (PKCS#8). */
  ca: Buffer
  server: {cert: Buffer; key: Buffer}
  /** One SASL user, known to PLAIN and (stored at format time) to SCRAM-SHA-256 and SCRAM-SHA-512. */
  user: string
  password: string
}

type ListenerName = 'PLAINTEXT' | 'TLS' | 'MTLS' | 'SASL' | 'SASL256' | 'SASLTLS'
const PROTOCOL: Record<ListenerName, string> = {PLAINTEXT: 'PLAINTEXT', TLS: 'SSL', MTLS: 'SSL', SASL: 'SASL_PLAINTEXT', SASL256: 'SASL_PLAINTEXT', SASLTLS: 'SASL_SSL'}

export class RealKafka {
  private child: ChildProcess | undefined
  /** The broker's last output lines, printed when it fails to start. */
  readonly log: string[] = []

  private constructor(
    private readonly dir: string,
    private readonly ports: Map<ListenerName | 'CONTROLLER', number>,
  ) {}

  /**
   * Formats a log dir and starts the broker; resolves once it logs that it started. With `security`,
   * also the listeners TLS (server certificate), MTLS (client certificate required), SASL (PLAIN,
   * SCRAM-SHA-256, SCRAM-SHA-512), SASL256 (without SCRAM-SHA-512) and SASLTLS (SASL over TLS).
   */
  static async start(security?: KafkaSecurity): Promise<RealKafka> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-real-kafka-'))
    const names: Array<ListenerName | 'CONTROLLER'> = ['PLAINTEXT', 'CONTROLLER', ...(security ? (['TLS', 'MTLS', 'SASL', 'SASL256', 'SASLTLS'] as const) : [])]
    const ports = new Map<ListenerName | 'CONTROLLER', number>()
    for (const name of names) ports.set(name, await freePort())
    const kafka = new RealKafka(dir, ports)
    await kafka.configure(security)
    await kafka.format(security)
    await kafka.launch()
    return kafka
  }

  /** host:port of a listener (PLAINTEXT unless named). */
  address(listener: ListenerName = 'PLAINTEXT'): string {
    const port = this.ports.get(listener)
    if (port === undefined) throw new Error(`listener ${listener} is not open (start the broker with security)`)
    return `127.0.0.1:${port}`
  }

  get pid(): number | undefined {
    return this.child?.pid
  }

  /** Stops the broker (SIGTERM: a controlled shutdown) and keeps its log dir, for `launch` again. */
  async halt(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill(signal)
    // A broker that hangs in shutdown is killed rather than left behind.
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    await exited
    clearTimeout(timer)
    this.child = undefined
  }

  /** Stops the broker and removes its files. */
  async stop(): Promise<void> {
    await this.halt()
    await rm(this.dir, {recursive: true, force: true})
  }

  /** Starts the broker process on the formatted log dir; resolves when it is ready. */
  async launch(): Promise<void> {
    if (this.child) throw new Error('the broker is running')
    const java = [
      '-Xms256m', '-Xmx768m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Djava.awt.headless=true',
      `-Dlog4j2.configurationFile=${path.join(this.dir, 'log4j2.yaml')}`, '-cp', `${KAFKA_LIBS}/*`, 'kafka.Kafka', path.join(this.dir, 'server.properties'),
    ]
    // setpriv's parent-death signal: the JVM dies with the test process even if that is SIGKILLed.
    const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', 'java', ...java], {stdio: ['ignore', 'pipe', 'pipe']})
    this.child = child
    const lines = createInterface({input: child.stdout!})
    child.stderr!.setEncoding('utf8').on('data', (d: string) => this.remember(d))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`Kafka did not start within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS)
      const fail = (error: Error) => {
        clearTimeout(timer)
        child.kill('SIGKILL')
        reject(new Error(`${error.message}\n${this.log.slice(-30).join('\n')}`))
      }
      child.once('exit', (code, signal) => fail(new Error(`Kafka exited while starting (${code ?? signal})`)))
      child.once('error', fail)
      lines.on('line', (line) => {
        this.remember(line)
        if (READY.test(line)) {
          clearTimeout(timer)
          child.removeAllListeners('exit')
          resolve()
        }
      })
    })
  }

  private remember(line: string): void {
    this.log.push(line)
    if (this.log.length > 500) this.log.splice(0, this.log.length - 500)
  }

  private async configure(security?: KafkaSecurity): Promise<void> {
    const listeners = [...this.ports].map(([name, port]) => `${name}://127.0.0.1:${port}`)
    const advertised = listeners.filter((l) => !l.startsWith('CONTROLLER'))
    const protocols = [...this.ports.keys()].map((name) => `${name}:${name === 'CONTROLLER' ? 'PLAINTEXT' : PROTOCOL[name]}`)
    const props: Record<string, string | number> = {
      'process.roles': 'broker,controller',
      'node.id': 1,
      'controller.quorum.voters': `1@127.0.0.1:${this.ports.get('CONTROLLER')}`,
      'controller.listener.names': 'CONTROLLER',
      'inter.broker.listener.name': 'PLAINTEXT',
      listeners: listeners.join(','),
      'advertised.listeners': advertised.join(','),
      'listener.security.protocol.map': protocols.join(','),
      'log.dirs': path.join(this.dir, 'data'),
      'num.partitions': 1,
      'auto.create.topics.enable': 'false',
      'offsets.topic.replication.factor': 1,
      'offsets.topic.num.partitions': 4,
      'transaction.state.log.replication.factor': 1,
      'transaction.state.log.min.isr': 1,
      'share.coordinator.state.topic.replication.factor': 1,
      'share.coordinator.state.topic.min.isr': 1,
      // A new group forms at once instead of waiting 3 s for more members.
      'group.initial.rebalance.delay.ms': 0,
      // The kill test's consumers use a 2 s session, below the default minimum of 6 s.
      'group.min.session.timeout.ms': 1000,
    }
    if (security) {
      const keystore = path.join(this.dir, 'server-keystore.pem')
      const truststore = path.join(this.dir, 'ca.pem')
      await mkdir(this.dir, {recursive: true})
      await writeFile(keystore, Buffer.concat([security.server.key, Buffer.from('\n'), security.server.cert]))
      await writeFile(truststore, security.ca)
      const jaas = (mechanism: string) =>
        mechanism === 'plain'
          ? `org.apache.kafka.common.security.plain.PlainLoginModule required user_${security.user}="${security.password}";`
          : 'org.apache.kafka.common.security.scram.ScramLoginModule required;'
      for (const name of ['TLS', 'MTLS', 'SASLTLS'] as const) {
        const l = `listener.name.${name.toLowerCase()}`
        props[`${l}.ssl.keystore.type`] = 'PEM'
        props[`${l}.ssl.keystore.location`] = keystore
        props[`${l}.ssl.truststore.type`] = 'PEM'
        props[`${l}.ssl.truststore.location`] = truststore
        props[`${l}.ssl.client.auth`] = name === 'MTLS' ? 'required' : 'none'
      }
      for (const name of ['SASL', 'SASL256', 'SASLTLS'] as const) {
        const l = `listener.name.${name.toLowerCase()}`
        const mechanisms = name === 'SASL256' ? ['plain', 'scram-sha-256'] : ['plain', 'scram-sha-256', 'scram-sha-512']
        props[`${l}.sasl.enabled.mechanisms`] = mechanisms.map((m) => m.toUpperCase()).join(',')
        for (const m of mechanisms) props[`${l}.${m}.sasl.jaas.config`] = jaas(m)
      }
    }
    await mkdir(this.dir, {recursive: true})
    const escape = (v: string | number) => String(v).replaceAll('\\', '\\\\')
    await writeFile(path.join(this.dir, 'server.properties'), Object.entries(props).map(([k, v]) => `${k}=${escape(v)}`).join('\n') + '\n')
    await writeFile(
      path.join(this.dir, 'log4j2.yaml'),
      ['Configuration:', '  Appenders:', '    Console:', '      name: STDOUT', '      target: SYSTEM_OUT', '      PatternLayout:', '        pattern: "%p %m (%c)%n"',
        '  Loggers:', '    Root:', '      level: INFO', '      AppenderRef:', '        - ref: STDOUT', ''].join('\n'),
    )
  }

  /** kafka-storage format: a new cluster id, and the SCRAM credentials (KRaft stores them in metadata). */
  private async format(security?: KafkaSecurity): Promise<void> {
    // As Kafka's own Uuid.randomUuid: never one starting with '-', which the tool would read as a flag
    // (1 start in 64 failed with "argument --cluster-id/-t: expected one argument").
    let clusterId: string
    do clusterId = randomBytes(16).toString('base64url')
    while (clusterId.startsWith('-'))
    const scram = security
      ? ['SCRAM-SHA-256', 'SCRAM-SHA-512'].flatMap((m) => ['--add-scram', `${m}=[name=${security.user},password=${security.password}]`])
      : []
    const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', 'java', '-Xmx256m', '-XX:TieredStopAtLevel=1', '-cp', `${KAFKA_LIBS}/*`, 'kafka.tools.StorageTool',
      'format', '-t', clusterId, '-c', path.join(this.dir, 'server.properties'), ...scram], {stdio: ['ignore', 'pipe', 'pipe']})
    let output = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d))
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d))
    const [code] = (await once(child, 'exit')) as [number | null]
    if (code !== 0) throw new Error(`kafka-storage format failed (${code}):\n${output}`)
  }
}
