// What the object-store backends (gcs.ts, s3.ts) share: the storage layer's error codes, content
// types by file name, bounded parallel bulk requests, and the description of written content by which a
// backend tells whether an object holds exactly those bytes (see index.ts, settleConditionalWrite).

/** Errors callers can react to, with the codes of node:fs where there is one. */
export function storageError(code: 'ENOENT' | 'EEXIST' | 'ECONFLICT', message: string, cause?: unknown): Error {
  return Object.assign(new Error(message, {cause}), {code})
}

/** The Content-Type an object gets from its name: JSON, YAML and text files readable in a browser, the rest bytes. */
export function contentTypeOf(uri: string): string {
  if (uri.endsWith('.json')) return 'application/json'
  if (uri.endsWith('.yaml') || uri.endsWith('.yml')) return 'application/yaml'
  if (uri.endsWith('.jsonl') || uri.endsWith('.md') || uri.endsWith('.txt') || uri.endsWith('.keys') || /\/(LATEST|\.lock)$/.test(uri)) {
    return 'text/plain; charset=utf-8'
  }
  return 'application/octet-stream'
}

/** Runs `work` on every item, at most `limit` at a time (bulk deletes and copies: a "directory" is many objects). */
export async function inParallel<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const lanes = Array.from({length: Math.min(limit, items.length)}, async () => {
    while (next < items.length) await work(items[next++]!)
  })
  await Promise.all(lanes)
}

/** What a write sent: bytes in memory, or a local file uploaded as it is. */
export type WrittenContent = {bytes: Buffer} | {file: string}
