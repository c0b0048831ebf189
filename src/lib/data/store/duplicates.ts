// duplicates.jsonl: the inputs an ingest dropped as duplicates, each with the copy it duplicates.
// Like the quarantine, entries are queued during a run and appended at its commit, and one already
// listed is not written again when an ingest re-runs over the same files.
import {appendText, joinPath} from '../../storage/index.js'
import type {DuplicateEntry} from '../types.js'
import {DUPLICATES, readIfExists} from './layout.js'

const identity = (entry: DuplicateEntry) => `${entry.origin}\u0000${entry.duplicateOf ?? entry.storedIn ?? ''}`

/** Names the kept copy of committed duplicates: origin (or, failing that, the shard) per key. */
export type ResolveKept = (keys: string[]) => Promise<Map<string, {origin?: string; shard: string}>>

export class Duplicates {
  private queued: DuplicateEntry[] = []
  private readonly written = new Set<string>()

  private constructor(private readonly dir: string) {}

  static async load(dir: string): Promise<Duplicates> {
    const duplicates = new Duplicates(dir)
    const text = await readIfExists(joinPath(dir, DUPLICATES))
    for (const line of text?.split('\n') ?? []) {
      if (!line) continue
      try {
        duplicates.written.add(identity(JSON.parse(line) as DuplicateEntry))
      } catch {
        // A torn last line from a crash: the entry is simply written again.
      }
    }
    return duplicates
  }

  /** Queues entries; one without duplicateOf duplicates a committed image, named at flush(). */
  add(entries: Iterable<DuplicateEntry>): void {
    for (const entry of entries) this.queued.push(entry)
  }

  /**
   * Names the kept copies still unnamed, then appends what was not listed before. A file that is
   * itself the stored copy (the same origin ingested again) is not a dropped duplicate: not listed.
   */
  async flush(resolve: ResolveKept): Promise<void> {
    const queued = this.queued
    this.queued = []
    const unnamed = queued.filter((e) => e.duplicateOf === undefined).map((e) => e.key)
    const kept = unnamed.length > 0 ? await resolve(unnamed) : new Map<string, {origin?: string; shard: string}>()
    const fresh: DuplicateEntry[] = []
    for (const entry of queued) {
      let named = entry
      if (entry.duplicateOf === undefined) {
        const copy = kept.get(entry.key)
        named = copy?.origin ? {...entry, duplicateOf: copy.origin} : copy ? {...entry, storedIn: copy.shard} : entry
      }
      if (named.duplicateOf === named.origin) continue
      const id = identity(named)
      if (this.written.has(id)) continue
      this.written.add(id)
      fresh.push(named)
    }
    if (fresh.length === 0) return
    await appendText(joinPath(this.dir, DUPLICATES), fresh.map((e) => JSON.stringify(e) + '\n').join(''))
  }

  drop(): void {
    this.queued = []
  }
}
