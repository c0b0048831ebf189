// What `ml ingest` sets up around a run, so that the command only parses flags and renders: the
// check that --follow has a stream to follow, the Prometheus metrics server, and the observer that
// reports each commit of a following run.
import type {MlConfig} from '../../config/schema.js'
import {UserError} from '../../errors.js'
import type {IngestObserver} from './types.js'

export interface IngestSetupOptions {
  config: MlConfig
  follow: boolean
  /** Serve Prometheus metrics on this port (0: any free one); undefined: no metrics server. */
  metricsPort?: number
  metricsHost: string
  /** Where a following run reports its commits and every run its warnings (a progress bar's log line). */
  log(line: string): void
}

export interface IngestSetup {
  /** Pass as runIngest's observer. */
  observer: IngestObserver
  /** The metrics server's address, when one was asked for. */
  metricsUrl?: string
  /** Stops the metrics server (after the run, whatever its outcome). */
  close(): Promise<void>
}

/** Refuses --follow without a stream source: folder and bucket sources are read once. */
export function checkFollow(config: MlConfig, follow: boolean): void {
  if (follow && !config.data.sources.some((source) => source.type === 'kafka' || source.type === 'kinesis')) {
    throw new UserError('--follow needs a stream source (type: kafka or kinesis) in data.sources; other sources are read once', {
      code: 'FOLLOW_WITHOUT_STREAM',
      exit: 'usage',
      suggestions: ['Add a kafka or kinesis source, or run `ml ingest` without --follow.'],
    })
  }
}

/** Checks the options and starts what the run reports to (see IngestSetup). */
export async function setUpIngest(options: IngestSetupOptions): Promise<IngestSetup> {
  checkFollow(options.config, options.follow)
  const metrics =
    options.metricsPort === undefined ? undefined : await (await import('../kafka-metrics.js')).serveIngestMetrics(options.metricsPort, options.metricsHost)
  const observer: IngestObserver = {
    ...metrics?.observer,
    committed: (info) => {
      metrics?.observer.committed?.(info)
      if (options.follow) options.log(`committed dataset v${info.version}: ${info.total} images (${info.shards} new shard(s))`)
    },
    warn: (message) => {
      metrics?.observer.warn?.(message)
      options.log(`warning: ${message}`)
    },
  }
  return {
    observer,
    ...(metrics ? {metricsUrl: `http://${options.metricsHost}:${metrics.port}/metrics`} : {}),
    close: async () => {
      await metrics?.close()
    },
  }
}
