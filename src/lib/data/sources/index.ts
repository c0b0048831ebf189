// Image sources: where ingest gets its files. Each source type streams SourceItems; this module
// holds their shared contract and dispatches on `type` (folder today; kafka and gcs to come).
import type {SourceConfig, SplitName} from '../../config/schema.js'
import {countFolderSource, openFolderSource} from './folder.js'

/** One image file offered by a source; nothing is read until read() is called. */
export interface SourceItem {
  /** Where the item came from: an absolute file path, a gs:// URI, topic/partition/offset... */
  origin: string
  /** The class name, or undefined when the source cannot tell (ingest quarantines it as no-label). */
  label: string | undefined
  /** Set when the source pins its items to one split; otherwise the content hash decides. */
  split?: SplitName
  /** Bytes, when known before reading: lets ingest reject a huge file without fetching it. */
  size?: number
  /** Reads the whole file; rejects on an I/O error. */
  read(): Promise<Buffer>
}

export interface SourceContext {
  /** Relative source paths are resolved against this (the config file's folder). */
  baseDir: string
  /** Aborting stops the iteration early, without an error. */
  signal?: AbortSignal
  /** Position of the source in data.sources, so that errors name the config key. */
  index?: number
}

/** Streams a source's items in a deterministic order. Errors about the source itself are UserErrors. */
export function openSource(source: SourceConfig, ctx: SourceContext): AsyncIterable<SourceItem> {
  switch (source.type) {
    case 'folder':
      return openFolderSource(source, ctx)
    default:
      return unknownSource(source.type)
  }
}

/** How many items openSource will yield, or undefined when that cannot be known cheaply. */
export async function countSource(source: SourceConfig, ctx: SourceContext): Promise<number | undefined> {
  switch (source.type) {
    case 'folder':
      return countFolderSource(source, ctx)
    default:
      return unknownSource(source.type)
  }
}

// The schema admits only known types, so reaching this is our bug; `never` makes adding a source
// type without handling it here a compile error.
function unknownSource(type: never): never {
  throw new Error(`unknown source type ${JSON.stringify(type)}`)
}
