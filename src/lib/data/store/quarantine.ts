// quarantine.jsonl: the inputs an ingest set aside, one JSON line each (origin, reason, detail,
// time). Entries are queued during a run and appended at its commit; an input already quarantined
// for the same reason is not written again, so that re-running an ingest does not grow the file.
import {appendText, joinPath} from '../../storage/index.js'
import type {QuarantineEntry} from '../types.js'
import {QUARANTINE, readIfExists} from './layout.js'

const identity = (entry: QuarantineEntry) => `${entry.reason}\u0000${entry.origin}`

export class Quarantine {
  private queued: QuarantineEntry[] = []
  private readonly written = new Set<string>()

  private constructor(private readonly dir: string) {}

  /** The quarantine of the store in `dir`, knowing what its file already lists. */
  static async load(dir: string): Promise<Quarantine> {
    const quarantine = new Quarantine(dir)
    const text = await readIfExists(joinPath(dir, QUARANTINE))
    for (const line of text?.split('\n') ?? []) {
      if (!line) continue
      try {
        quarantine.written.add(identity(JSON.parse(line) as QuarantineEntry))
      } catch {
        // A torn last line from a crash: the entry is simply written again.
      }
    }
    return quarantine
  }

  add(entries: Iterable<QuarantineEntry>): void {
    for (const entry of entries) this.queued.push(entry)
  }

  /** Appends the queued entries not written before. */
  async flush(): Promise<void> {
    const fresh: QuarantineEntry[] = []
    for (const entry of this.queued) {
      const id = identity(entry)
      if (this.written.has(id)) continue
      this.written.add(id)
      fresh.push(entry)
    }
    this.queued = []
    if (fresh.length === 0) return
    await appendText(joinPath(this.dir, QUARANTINE), fresh.map((e) => JSON.stringify(e) + '\n').join(''))
  }

  /** Forgets the queued entries (the run they came from is being discarded). */
  drop(): void {
    this.queued = []
  }
}
