// Image sources: where ingest gets its files. Each source type streams SourceItems (the contract in
// types.ts); this module dispatches on `type` (folder, kafka and gcs).
import type {SourceConfig} from '../../config/schema.js'
import {countFolderSource, openFolderSource} from './folder.js'
import {countGcsSource, openGcsSource} from './gcs.js'
import {openKafkaSource} from './kafka.js'
import {openKinesisSource} from './kinesis.js'
import {countS3Source, openS3Source} from './s3.js'
import type {SourceContext, SourceItem} from './types.js'

export {TooLargeError, isSourceStream} from './types.js'
export type {SourceCheckpoints, SourceContext, SourceItem, SourceStream, StreamObserver} from './types.js'

export {mergeCheckpoints} from '../checkpoints.js'

/** Streams a source's items in a deterministic order. Errors about the source itself are UserErrors. */
export function openSource(source: SourceConfig, ctx: SourceContext): AsyncIterable<SourceItem> {
  switch (source.type) {
    case 'folder':
      return openFolderSource(source, ctx)
    case 'kafka':
      return openKafkaSource(source, ctx)
    case 'gcs':
      return openGcsSource(source, ctx)
    case 's3':
      return openS3Source(source, ctx)
    case 'kinesis':
      return openKinesisSource(source, ctx)
    default:
      return unknownSource(source)
  }
}

/** How many items openSource will yield, or undefined when that cannot be known cheaply. */
export async function countSource(source: SourceConfig, ctx: SourceContext): Promise<number | undefined> {
  switch (source.type) {
    case 'folder':
      return countFolderSource(source, ctx)
    case 'kafka':
      // The lag would be a count, but it moves while we consume; progress shows none.
      return undefined
    case 'gcs':
      return countGcsSource(source, ctx)
    case 's3':
      return countS3Source(source, ctx)
    case 'kinesis':
      return undefined
    default:
      return unknownSource(source)
  }
}

// The schema admits only known types, so reaching this is our bug; `never` makes adding a source
// type without handling it here a compile error.
function unknownSource(source: never): never {
  throw new Error(`unknown source type ${JSON.stringify((source as {type: unknown}).type)}`)
}
