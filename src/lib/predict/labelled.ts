// Labelled images for `ml evaluate`, from wherever they are: a split of a dataset store (a local
// folder, gs:// or s3://) or a folder of images with one sub-folder per class (the layout `ml ingest`
// reads). Either yields batches of model-ready floats with each image's class name index, decoded a
// batch at a time and giving the event loop back between batches, so that an engine in a worker
// thread is fed while the next batch decodes.
import {readdir, readFile, stat} from 'node:fs/promises'
import path from 'node:path'
import type {SplitName} from '../config/schema.js'
import {decodeStoredPng, decodeStoredWithSharp, type ImageLimits} from '../data/image.js'
import {readManifest, readShard} from '../data/store.js'
import type {DatasetManifest} from '../data/types.js'
import {UserError} from '../errors.js'
import {DEFAULT_IMAGE_LIMITS, preprocessImage, type Preprocessing} from '../serve/predictor.js'
import {exists, isRemote, joinPath} from '../storage/index.js'
import {isImageName} from './files.js'

export interface LabelledBatch {
  /** n * H * W * C floats, preprocessed as the model expects. */
  input: Float32Array
  n: number
  /** Each image's class, an index into the source's `classes`. */
  labels: Int32Array
  keys: string[]
}

export interface LabelledSource {
  kind: 'store' | 'folder'
  /** The store or folder, as given. */
  location: string
  /** The store's split (a folder has none). */
  split?: SplitName
  /** Class names, in the source's own order (matched to a model's labels by name). */
  classes: string[]
  /** Images per class name, known before decoding. */
  counts: Record<string, number>
  /** Images to score. */
  count: number
  /** Files of a folder that could not be decoded: left out of the scores, named here. */
  skipped: Array<{file: string; error: string}>
  /** The dataset version, for a store. */
  version?: number
  batches(batchSize: number): AsyncGenerator<LabelledBatch>
}

/** Gives the event loop a turn, so that a worker's answer is taken while decoding goes on. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/** A dataset store (has manifest.json) or else a folder of class sub-folders. */
export async function openLabelledSource(location: string, options: {split?: SplitName; preprocessing: Preprocessing; limits?: ImageLimits}): Promise<LabelledSource> {
  if (isRemote(location) || (await exists(joinPath(location, 'manifest.json')))) return openStoreSource(location, options.split ?? 'test', options.preprocessing)
  if (options.split !== undefined && options.split !== 'test') {
    throw new UserError(`${location} is a folder of images, not a dataset store: it has no ${options.split} split`, {
      code: 'EVALUATE_NO_SPLIT',
      exit: 'usage',
      suggestions: ['Drop --split to score every image in the folder, or name a dataset store with --data.'],
    })
  }
  return openFolderSource(location, options.preprocessing, options.limits ?? DEFAULT_IMAGE_LIMITS)
}

/** A split of a dataset store, shards read in manifest order and checked as training reads them. */
export async function openStoreSource(store: string, split: SplitName, preprocessing: Preprocessing, manifest?: DatasetManifest): Promise<LabelledSource> {
  const m = manifest ?? (await readManifest(store))
  const shards = m.shards.filter((s) => s.split === split)
  const count = shards.reduce((n, s) => n + s.count, 0)
  if (count === 0) {
    throw new UserError(`the ${split} split of ${store} is empty`, {
      code: 'SPLIT_EMPTY',
      exit: 'data',
      suggestions: ['Set data.split.test above 0 (or add a source with split: test) and run `ml ingest` again, or pass --split validation.'],
    })
  }
  const {height, width, channels} = m.image
  // Stored images already have the model's size: decode them straight (the JS PNG path where it
  // can), else resize each as predict would.
  const sameShape = preprocessing.height === height && preprocessing.width === width && preprocessing.channels === channels
  const frame = preprocessing.height * preprocessing.width * preprocessing.channels
  return {
    kind: 'store',
    location: store,
    split,
    classes: m.classes,
    counts: {...m.counts[split]},
    count,
    skipped: [],
    version: m.version,
    async *batches(batchSize) {
      let input = new Float32Array(batchSize * frame)
      let labels = new Int32Array(batchSize)
      let keys: string[] = []
      let n = 0
      const pixels = new Uint8Array(height * width * channels)
      for (const shard of shards) {
        for await (const r of readShard(store, shard)) {
          const where = {store, shard: shard.file, key: r.key}
          if (!(r.label >= 0 && r.label < m.classes.length)) {
            throw new UserError(`image ${r.key} in shard ${shard.file} of dataset ${store} has label ${r.label}, outside the ${m.classes.length} classes`, {code: 'DATASET_CORRUPT', exit: 'data', details: where})
          }
          const out = input.subarray(n * frame, (n + 1) * frame)
          try {
            if (sameShape) {
              const decoded = decodeStoredPng(r.encoded, width, height, channels)
              if (decoded !== undefined) pixels.set(decoded)
              else await decodeStoredWithSharp(r.encoded, pixels, width, height, channels)
              const {scale, offset} = preprocessing
              for (let i = 0; i < frame; i++) out[i] = pixels[i]! * scale + offset
            } else {
              out.set(await preprocessImage(Buffer.from(r.encoded), preprocessing, `image ${r.key} in shard ${shard.file} of dataset ${store}`))
            }
          } catch (error) {
            throw new UserError(`image ${r.key} in shard ${shard.file} of dataset ${store} cannot be decoded: ${(error as Error).message}`, {code: 'DATASET_CORRUPT', exit: 'data', details: where, cause: error})
          }
          labels[n] = r.label
          keys.push(r.key)
          if (++n === batchSize) {
            yield {input, n, labels, keys}
            input = new Float32Array(batchSize * frame)
            labels = new Int32Array(batchSize)
            keys = []
            n = 0
            await turn()
          }
        }
      }
      if (n > 0) yield {input: input.subarray(0, n * frame), n, labels: labels.subarray(0, n), keys}
    },
  }
}

/**
 * A local folder with one sub-folder per class (images anywhere under it, by extension; hidden
 * entries skipped), decoded in the thread pool as `ml predict` decodes. A file that cannot be read
 * or decoded is left out and named in `skipped`, not fatal.
 */
export async function openFolderSource(root: string, preprocessing: Preprocessing, limits: ImageLimits): Promise<LabelledSource> {
  const info = await stat(root).catch(() => undefined)
  if (!info?.isDirectory()) {
    throw new UserError(`${root} is neither a dataset store nor a folder`, {
      code: 'EVALUATE_DATA_NOT_FOUND',
      exit: 'data',
      suggestions: ['Name a dataset store (a folder with manifest.json, gs:// or s3://) or a folder with one sub-folder of images per class.'],
    })
  }
  const classes = (await readdir(root, {withFileTypes: true}))
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort(byCodeUnit)
  const files: Array<{file: string; label: number}> = []
  const counts: Record<string, number> = {}
  for (const [label, name] of classes.entries()) {
    const entries = await readdir(path.join(root, name), {recursive: true, withFileTypes: true})
    const images = entries
      .filter((e) => e.isFile() && isImageName(e.name) && !e.name.startsWith('.') && !path.relative(root, e.parentPath).split(path.sep).some((part) => part.startsWith('.')))
      .map((e) => path.join(e.parentPath, e.name))
      .sort(byCodeUnit)
    counts[name] = images.length
    for (const file of images) files.push({file, label})
  }
  if (files.length === 0) {
    throw new UserError(`no labelled images in ${root}`, {
      code: 'EVALUATE_NO_IMAGES',
      exit: 'data',
      suggestions: ['Lay the images out as <folder>/<class name>/<image>, as `ml ingest` reads them.'],
    })
  }
  const skipped: Array<{file: string; error: string}> = []
  const frame = preprocessing.height * preprocessing.width * preprocessing.channels
  return {
    kind: 'folder',
    location: root,
    classes,
    counts,
    count: files.length,
    skipped,
    async *batches(batchSize) {
      for (let start = 0; start < files.length; start += batchSize) {
        const slice = files.slice(start, start + batchSize)
        const decoded = await Promise.all(
          slice.map(async ({file}) => {
            try {
              return await preprocessImage(await readFile(file), preprocessing, file, limits)
            } catch (error) {
              if (!(error instanceof UserError) && !(error as NodeJS.ErrnoException).code) throw error
              skipped.push({file, error: error instanceof UserError ? error.message : `${file}: ${(error as Error).message}`})
              return undefined
            }
          }),
        )
        const ok = slice.flatMap((s, i) => (decoded[i] ? [{...s, floats: decoded[i]}] : []))
        if (ok.length === 0) continue
        const input = new Float32Array(ok.length * frame)
        ok.forEach((d, i) => input.set(d.floats, i * frame))
        yield {input, n: ok.length, labels: Int32Array.from(ok, (d) => d.label), keys: ok.map((d) => d.file)}
      }
    },
  }
}
