// `ml ingest`: streams every configured source through read -> hash -> normalise in parallel, sets
// bad inputs aside in the quarantine, dedupes and splits by content hash, and commits shards at once.
// The run itself is an IngestRun (ingest/run.ts) with named steps; its shards go through a
// ShardCommitter (ingest/committer.ts).
import {IngestRun} from './ingest/run.js'
import type {IngestOptions, IngestSummary} from './ingest/types.js'

export type {IngestObserver, IngestOptions, IngestProgress, IngestSummary} from './ingest/types.js'

/** Ingests every source of `config.data` into its dataset store; see IngestOptions and IngestSummary. */
export async function runIngest(options: IngestOptions): Promise<IngestSummary> {
  const run = await IngestRun.open(options)
  return run.execute()
}
