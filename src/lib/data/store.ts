// The dataset store: immutable TFRecord shards plus an atomically replaced manifest.json listing them.
// Writers add shards, then one commit publishes them; readers trust only what the manifest lists.
// This module is the store's front door; its parts live in store/: the layout on disk, the
// manifest, the writer lock, the shard writer, the quarantine, the writing store and the reader.
export {DatasetStore} from './store/dataset-store.js'
export {compareClassNames, readManifest, type HistoryEntry} from './store/manifest.js'
export {loadSplit, readShard} from './store/reader.js'
export type {ShardWriter} from './store/shard-writer.js'
