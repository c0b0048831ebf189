// The in-repo Kafka broker in its own process (kafka-broker-main.ts), for tests whose clients get
// killed: a broker that shares the test's process would share its event loop with the scenario.
import {spawn} from 'node:child_process'
import {once} from 'node:events'
import path from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import type {ApiName} from './kafka-broker.js'

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'kafka-broker-main.js')

export interface BrokerProcess {
  /** host:port on 127.0.0.1. */
  brokers: string
  /** Stops the broker (SIGTERM) and waits for it to exit. */
  stop(): Promise<void>
}

/** Starts the broker with `topics` created and `delays` (ms) added to the answers of those APIs. */
export async function startBrokerProcess(topics: Array<[string, number]>, delays: Partial<Record<ApiName, number>> = {}): Promise<BrokerProcess> {
  const args = [...topics.flatMap(([name, partitions]) => ['--topic', `${name}:${partitions}`]), ...Object.entries(delays).flatMap(([api, ms]) => ['--delay', `${api}:${ms}`])]
  // Its stdin is a pipe: when the test process dies, the broker sees the end of it and stops too.
  const broker = spawn(process.execPath, [MAIN, ...args], {stdio: ['pipe', 'pipe', 'inherit']})
  const [line] = (await once(createInterface({input: broker.stdout!}), 'line')) as [string]
  return {
    brokers: `127.0.0.1:${(JSON.parse(line) as {port: number}).port}`,
    async stop() {
      if (broker.exitCode !== null || broker.signalCode !== null) return
      broker.kill('SIGTERM')
      await once(broker, 'exit')
    },
  }
}
