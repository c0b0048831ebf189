// The dataset store's layout on disk (or in a bucket) and the small helpers its parts share: file
// names, number padding, checksums as the manifest writes them, and the errors a damaged or
// misplaced store produces.
import {createHash} from 'node:crypto'
import {UserError} from '../../errors.js'
import {errorCode, readText} from '../../storage/index.js'

export const MANIFEST = 'manifest.json'
export const MANIFESTS_DIR = 'manifests'
export const SHARDS_DIR = 'shards'
export const QUARANTINE = 'quarantine.jsonl'
export const DUPLICATES = 'duplicates.jsonl'
export const LOCK = '.lock'
/** Registrations of the writers sharing a store (the members of a consumer group): writers/<id>. */
export const WRITERS_DIR = 'writers'

/** Each shard's origins, one JSON string per line in key-list order, beside its key list. */
export const originsFileOf = (keysFile: string) => keysFile.replace(/\.keys$/, '') + '.origins'

export const pad = (n: number, width: number) => String(n).padStart(width, '0')
export const sha256Hex = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex')

/** A CRC-32C as ShardInfo.crc32c writes it: base64 of the 4 big-endian bytes. */
export function crc32cText(crc: number): string {
  const bytes = Buffer.alloc(4)
  bytes.writeUInt32BE(crc >>> 0)
  return bytes.toString('base64')
}

export function corrupt(message: string, details: Record<string, unknown>, cause?: unknown): UserError {
  return new UserError(message, {
    code: 'DATASET_CORRUPT',
    exit: 'data',
    cause,
    details,
    suggestions: ['Restore the store from a backup, or delete it and run `ml ingest` again.'],
  })
}

/**
 * The UserError for a store path the user got wrong, from the error of a file access under `store`:
 * the store (or a folder on the way to it) is a file rather than a folder (ENOTDIR), or this user
 * may not read or write it (EACCES, EPERM). Undefined for any other error (a bug, or a full disk).
 */
export function storeAccessError(error: unknown, store: string, file: string): UserError | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  if (code === 'ENOTDIR') {
    return new UserError(`the dataset store ${store} is not a folder: ${file} cannot be under it`, {
      code: 'DATASET_NOT_A_FOLDER',
      exit: 'usage',
      cause: error,
      details: {store, file},
      suggestions: [`Set \`data.store\` to a folder (\`ml ingest\` creates it), not to the file ${store}.`],
    })
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new UserError(`cannot access ${file} of the dataset store ${store}: permission denied`, {
      code: 'DATASET_UNREADABLE',
      exit: 'data',
      cause: error,
      details: {store, file},
      suggestions: [`Give this user access to ${store} (its owner can run \`chmod -R u+rwX\` on it), or set \`data.store\` to a store you can use.`],
    })
  }
  return undefined
}

/** Runs a file access under `store`, turning a misplaced or forbidden store into its UserError. */
export async function accessing<T>(store: string, file: string, access: () => Promise<T>): Promise<T> {
  try {
    return await access()
  } catch (error) {
    throw storeAccessError(error, store, file) ?? error
  }
}

/** The text of `file`, or undefined when it does not exist. */
export async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readText(file)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw error
  }
}
