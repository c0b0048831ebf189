// Prometheus metrics of `ml ingest` (meant for --follow): records consumed, lag per partition,
// rejects by reason and commits, served as text on GET /metrics by a small HTTP server.
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import {Counter, Gauge, Registry} from 'prom-client'
import {UserError} from '../errors.js'
import type {IngestObserver} from './ingest.js'

export interface IngestMetricsServer {
  /** Feeds the metrics; pass it as runIngest's observer. */
  observer: IngestObserver
  registry: Registry
  /** The bound port (useful when 0 was asked for). */
  port: number
  close(): Promise<void>
}

/** Metrics for one ingest run, not yet served. */
export function ingestMetrics(registry = new Registry()): {observer: IngestObserver; registry: Registry} {
  const consumed = new Counter({
    name: 'ml_ingest_records_consumed_total',
    help: 'Messages taken from Kafka and handed to the image pipeline.',
    labelNames: ['topic', 'partition'],
    registers: [registry],
  })
  const lag = new Gauge({
    name: 'ml_ingest_kafka_lag',
    help: 'Messages in the partition after the last one consumed (high watermark of the last fetch).',
    labelNames: ['topic', 'partition'],
    registers: [registry],
  })
  const paused = new Gauge({name: 'ml_ingest_kafka_paused', help: '1 while consumption is paused because maxInFlightBytes are waiting.', registers: [registry]})
  const pauses = new Counter({name: 'ml_ingest_kafka_pauses_total', help: 'Times consumption paused for backpressure.', registers: [registry]})
  const rejects = new Counter({name: 'ml_ingest_rejects_total', help: 'Inputs quarantined, by reason.', labelNames: ['reason'], registers: [registry]})
  const commits = new Counter({name: 'ml_ingest_shard_commits_total', help: 'Manifest commits that published new shards.', registers: [registry]})
  const shards = new Counter({name: 'ml_ingest_shards_committed_total', help: 'Shards published by those commits.', registers: [registry]})
  const version = new Gauge({name: 'ml_ingest_dataset_version', help: 'Dataset version of the last commit.', registers: [registry]})
  const examples = new Gauge({name: 'ml_ingest_dataset_examples', help: 'Examples in the dataset after the last commit.', registers: [registry]})
  const observer: IngestObserver = {
    consumed: (topic, partition, count) => consumed.inc({topic, partition: String(partition)}, count),
    lag: (topic, partition, value) => lag.set({topic, partition: String(partition)}, value),
    paused: (on) => {
      paused.set(on ? 1 : 0)
      if (on) pauses.inc()
    },
    rejected: (reason) => rejects.inc({reason}),
    committed: (info) => {
      commits.inc()
      shards.inc(info.shards)
      version.set(info.version)
      examples.set(info.total)
    },
  }
  return {observer, registry}
}

/** Serves ingestMetrics() on http://host:port/metrics. */
export async function serveIngestMetrics(port: number, host = '127.0.0.1'): Promise<IngestMetricsServer> {
  const {observer, registry} = ingestMetrics()
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, {'content-type': 'text/plain'}).end('not found: metrics are at /metrics\n')
      return
    }
    registry.metrics().then(
      (text) => res.writeHead(200, {'content-type': registry.contentType}).end(text),
      (error: unknown) => res.writeHead(500, {'content-type': 'text/plain'}).end(`${String(error)}\n`),
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new UserError(`--metrics-port ${port}: cannot listen on ${host}:${port}: ${error.message}`, {
          code: 'METRICS_PORT',
          exit: 'usage',
          cause: error,
          suggestions: ['Pick a free port, or leave --metrics-port off.'],
        }),
      ),
    )
    server.listen(port, host, () => resolve())
  })
  return {
    observer,
    registry,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
