// One source item through read -> hash -> normalise: what ingest makes of it (stored, duplicate of
// a committed image, or rejected with a reason), computed concurrently and handled in source order.
import {createHash} from 'node:crypto'
import type {MlConfig, SplitName} from '../../config/schema.js'
import {normaliseImageDeferred, type ImageLimits} from '../image.js'
import {TooLargeError, type SourceItem} from '../sources/types.js'
import type {DatasetStore} from '../store.js'
import type {Bytes} from '../types.js'

export type Outcome =
  | {kind: 'rejected'; origin: string; reason: string; detail: string}
  | {kind: 'duplicate'; origin: string; key: string}
  | {kind: 'ok'; key: string; label: string; split?: SplitName; origin: string; encoded: Bytes; width: number; height: number; channels: number}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error))

export async function processItem(item: SourceItem, store: DatasetStore, config: MlConfig, limits: ImageLimits): Promise<Outcome> {
  const origin = item.origin
  const reject = (reason: string, detail: string): Outcome => ({kind: 'rejected', origin, reason, detail})
  if (item.problem) return reject(item.problem.reason, item.problem.detail)
  if (item.label === undefined || item.label === '') {
    return reject('no-label', 'no class: put the image in a class sub-folder, or set `label` on the source')
  }
  const tooLarge = (size: number) => reject('too-large', `${size} bytes, data.maxFileBytes is ${limits.maxFileBytes}`)
  // Skipping before the read saves fetching a huge remote object only to reject it.
  if (item.size !== undefined && item.size > limits.maxFileBytes) return tooLarge(item.size)
  let bytes: Buffer
  try {
    bytes = await item.read(limits.maxFileBytes)
  } catch (error) {
    if (error instanceof TooLargeError) return tooLarge(error.size)
    return reject('unreadable', messageOf(error))
  }
  const key = createHash('sha256').update(bytes).digest('hex')
  // Committed duplicates skip decoding, which makes re-ingesting unchanged sources cheap. Duplicates
  // within this run are settled in source order by the caller, so the same copy always wins.
  if (store.hasKey(key)) return {kind: 'duplicate', origin, key}
  try {
    const result = await normaliseImageDeferred(bytes, config.data.image, limits, {compression: config.data.compression})
    if (!result.ok) return reject(result.reason, result.detail)
    return {
      kind: 'ok',
      key,
      label: item.label,
      ...(item.split === undefined ? {} : {split: item.split}),
      origin,
      encoded: result.encoded,
      width: result.width,
      height: result.height,
      channels: result.channels,
    }
  } catch (error) {
    return reject('corrupt', messageOf(error))
  }
}
