// kafkajs set up for tests against the test broker: quiet (logs go to a buffer), short timeouts and
// retries so that injected faults and restarts are survived in milliseconds rather than minutes.
import {Kafka, logLevel, type ConsumerConfig, type KafkaConfig, type LogEntry} from 'kafkajs'

/** kafkajs log lines of every client made here, for printing when a test fails. */
export const kafkaLog: string[] = []

/** `security`: TLS and SASL settings for a broker that wants them. */
export function testKafka(brokers: string | string[], clientId = 'ml-test', security: Pick<KafkaConfig, 'ssl' | 'sasl'> = {}): Kafka {
  return new Kafka({
    clientId,
    brokers: Array.isArray(brokers) ? brokers : [brokers],
    ...security,
    logLevel: logLevel.WARN,
    logCreator: () => (entry: LogEntry) => {
      if (kafkaLog.length < 10_000) kafkaLog.push(`${entry.namespace} ${entry.log.message}`)
    },
    connectionTimeout: 1000,
    requestTimeout: 2000,
    retry: {initialRetryTime: 50, maxRetryTime: 500, retries: 20},
  })
}

/** Consumer settings that make joins, heartbeats and fetch long-polls fast. */
export const FAST_CONSUMER: Omit<ConsumerConfig, 'groupId'> = {
  sessionTimeout: 6000,
  rebalanceTimeout: 6000,
  heartbeatInterval: 100,
  maxWaitTimeInMs: 100,
  retry: {initialRetryTime: 50, maxRetryTime: 500, retries: 20},
}

/** Resolves when `check()` is true, re-checking whenever `on` fires (no polling loop). */
export function when(on: (listener: () => void) => () => void, check: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    if (check()) return resolve()
    const off = on(() => {
      if (check()) {
        off()
        resolve()
      }
    })
  })
}
