// Entry point of one server process under `serve.processes > 1` (forked by the cluster primary in
// run.ts): the same server as a single process, with /metrics aggregated through the primary.
import {AggregatorRegistry} from 'prom-client'
import {errorToJson} from '../errors.js'
import type {ServeOptions} from './options.js'
import {OPTIONS_ENV, servedModels, type ClusterMessage} from './run.js'
import {startServer, type ServeHandle} from './server.js'

// Installs prom-client's listener that answers the primary's requests for this process's metrics.
new AggregatorRegistry()

const send = (message: ClusterMessage) => new Promise<void>((resolve) => process.send!(message, undefined, {}, () => resolve()))
const waiting = new Map<number, (text: string) => void>()
let nextId = 1
let handle: ServeHandle | undefined
let stopping: Promise<void> | undefined

function aggregatedMetrics(): Promise<string> {
  return new Promise((resolve) => {
    const id = nextId++
    // Should the primary not answer, this process's own metrics are better than none.
    const fallback = setTimeout(() => {
      waiting.delete(id)
      void handle!.metrics.registry.metrics().then(resolve)
    }, 5_000)
    waiting.set(id, (text) => {
      clearTimeout(fallback)
      resolve(text)
    })
    void send({type: 'ml:metrics-request', id})
  })
}

/** Called again with skipDelay, it ends the delay of the shutdown under way. */
function shutdown(skipDelay: boolean): void {
  const drained = handle?.shutdown({skipDelay})
  stopping ??= (async () => {
    await drained
    if (handle) await send({type: 'ml:stopped', requests: handle.handled()})
    // Exit now rather than when the last handle closes: the primary counts exits as drained.
    process.exit(0)
  })()
}

process.on('message', (message: ClusterMessage) => {
  if (message.type === 'ml:metrics') {
    waiting.get(message.id)?.(message.text)
    waiting.delete(message.id)
  } else if (message.type === 'ml:shutdown') shutdown(message.skipDelay)
})
// Ctrl-C reaches every process of the group, and the primary forwards it too; each process shuts
// down on its own, and a second signal ends the delay, as in the primary.
let signals = 0
const onSignal = () => shutdown(signals++ > 0)
process.on('SIGTERM', onSignal)
process.on('SIGINT', onSignal)

try {
  const options = JSON.parse(process.env[OPTIONS_ENV] ?? '') as ServeOptions
  handle = await startServer(options, {metricsText: aggregatedMetrics, logFields: {pid: process.pid}})
  AggregatorRegistry.setRegistries([handle.metrics.registry])
  await send({type: 'ml:listening', port: handle.port, url: handle.url, models: servedModels(handle), ...(handle.grpcPort === undefined ? {} : {grpcPort: handle.grpcPort})})
} catch (error) {
  await send({type: 'ml:fatal', error: errorToJson(error).error})
  process.exitCode = 1
  process.disconnect()
}
