// manifest.json, the committed state of a dataset store: reading and checking it, and building the
// next version from the previous one and what a run wrote.
import {SPLITS, type ImageSpec, type SplitName} from '../../config/schema.js'
import {UserError} from '../../errors.js'
import {errorCode, joinPath, readVersioned} from '../../storage/index.js'
import type {SplitFractions} from '../splits.js'
import type {ClassCounts, DatasetManifest, ShardInfo, SourceCheckpoints} from '../types.js'
import {accessing, corrupt, MANIFEST, MANIFESTS_DIR, pad, readIfExists, sha256Hex} from './layout.js'

export type HistoryEntry = DatasetManifest['history'][number]

/** Orders new class names: numerically when both are digit strings (so "2" < "10"), else by code point. */
export function compareClassNames(a: string, b: string): number {
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) {
    const d = Number(a) - Number(b)
    if (d !== 0) return d
  }
  return a < b ? -1 : a > b ? 1 : 0
}

export function parseManifest(text: string, file: string): DatasetManifest {
  let manifest: DatasetManifest
  try {
    manifest = JSON.parse(text) as DatasetManifest
  } catch (error) {
    throw corrupt(`${file} is not valid JSON: ${(error as Error).message}`, {file}, error)
  }
  if (manifest?.format !== 'ml-dataset' || !Array.isArray(manifest.shards)) {
    throw corrupt(`${file} is not an ml dataset manifest`, {file})
  }
  if (manifest.formatVersion !== 1) {
    throw new UserError(`${file} has dataset format version ${manifest.formatVersion}; this ml reads version 1`, {
      code: 'DATASET_FORMAT',
      exit: 'data',
      details: {file},
      suggestions: ['Use the ml version that wrote the dataset, or re-create it with `ml ingest` into a new store.'],
    })
  }
  return manifest
}

/** The file that commits manifest version `version`: creating it is the commit (see commitVersion). */
export const versionFile = (dir: string, version: number) => joinPath(dir, MANIFESTS_DIR, `v${pad(version, 4)}.json`)

/** The committed manifest as found, with the revision of manifest.json as read (undefined when absent). */
export interface LatestManifest {
  manifest: DatasetManifest | undefined
  /** Revision of manifest.json as read, for a compare-and-swap update of that pointer. */
  pointerRevision: string | undefined
  /** The version manifest.json named (0 when absent): behind `manifest.version` while a commit is under way. */
  pointerVersion: number
}

/**
 * Reads the latest committed manifest of a store. A version is committed once manifests/v<N>.json
 * exists (it is created exclusively, see DatasetStore.commit); manifest.json is a copy of a recent
 * one, written just after, so the versions after the one it names are followed until one is
 * missing. Costs one request more than reading manifest.json alone (the probe that finds nothing).
 */
export async function readLatestManifest(dir: string): Promise<LatestManifest> {
  const file = joinPath(dir, MANIFEST)
  const read = await accessing(dir, file, () => readVersioned(file))
  let manifest = read === undefined ? undefined : parseManifest(read.data.toString('utf8'), file)
  const pointerVersion = typeof manifest?.version === 'number' ? manifest.version : 0
  for (;;) {
    const next = await followingVersion(dir, typeof manifest?.version === 'number' ? manifest.version : 0)
    if (next === undefined) break
    manifest = next
  }
  return {manifest, pointerRevision: read?.revision, pointerVersion}
}

/** Manifest version `after + 1` when it is committed, else undefined. */
export async function followingVersion(dir: string, after: number): Promise<DatasetManifest | undefined> {
  const file = versionFile(dir, after + 1)
  const text = await accessing(dir, file, () => readIfExists(file))
  if (text === undefined) return undefined
  const manifest = parseManifest(text, file)
  if (manifest.version !== after + 1) throw corrupt(`${file} holds version ${manifest.version}`, {file})
  return manifest
}

/** Reads the latest committed manifest of the store in `dir` (see readLatestManifest). */
export async function readManifest(dir: string): Promise<DatasetManifest> {
  const {manifest} = await readLatestManifest(dir)
  if (manifest === undefined) {
    throw new UserError(`no dataset at ${dir} (${MANIFEST} not found)`, {
      code: 'DATASET_NOT_FOUND',
      exit: 'data',
      details: {store: dir},
      suggestions: ['run `ml ingest` first'],
    })
  }
  return manifest
}

/** True when `error` says a create-only write found the file there (another writer took that name). */
export const lostRace = (error: unknown) => errorCode(error) === 'EEXIST'

export function emptyCounts(classes: readonly string[]): Record<SplitName, ClassCounts> {
  const counts = {} as Record<SplitName, ClassCounts>
  for (const split of SPLITS) counts[split] = Object.fromEntries(classes.map((name) => [name, 0]))
  return counts
}

/**
 * Refuses to add to a store whose images or split rule differ from the config's: stored images
 * would be one size and new ones another, or split by the old rule and new ones by the new one.
 */
export function checkCompatible(manifest: DatasetManifest, root: string, image: ImageSpec, split: SplitFractions): void {
  const diff = (['width', 'height', 'channels', 'fit'] as const).filter((k) => manifest.image[k] !== image[k]).map((k) => `${k} ${manifest.image[k]} vs ${image[k]}`)
  if (diff.length > 0) {
    throw new UserError(
      `the dataset store ${root} holds ${manifest.image.width}x${manifest.image.height}x${manifest.image.channels} ` +
        `(fit ${manifest.image.fit}) images but data.image asks for ${image.width}x${image.height}x${image.channels} ` +
        `(fit ${image.fit}): ${diff.join(', ')}`,
      {
        code: 'DATASET_SPEC_MISMATCH',
        exit: 'usage',
        details: {store: root, stored: manifest.image, config: image},
        suggestions: ['Set another `data.store` for the new image size, or delete the store to re-ingest everything.'],
      },
    )
  }
  const s = manifest.split
  if (s.validation !== split.validation || s.test !== split.test || s.seed !== split.seed) {
    // Changing the rule would leave stored images split by the old one and new ones by the new
    // one: say so rather than silently keep either.
    throw new UserError(
      `the dataset store ${root} was split with validation ${s.validation}, test ${s.test}, seed ${s.seed} ` +
        `but data.split says validation ${split.validation}, test ${split.test}, seed ${split.seed}`,
      {
        code: 'DATASET_SPEC_MISMATCH',
        exit: 'usage',
        details: {store: root, stored: s, config: split},
        suggestions: ['Restore the old data.split values, or set another `data.store` (or delete the store) to re-split everything.'],
      },
    )
  }
}

/** The manifest of a store nothing was committed to (version 0). */
export function emptyManifest(image: ImageSpec, split: SplitFractions, classes: readonly string[], now: string): DatasetManifest {
  return {
    format: 'ml-dataset',
    formatVersion: 1,
    version: 0,
    createdAt: now,
    updatedAt: now,
    image,
    classes: [...classes],
    counts: emptyCounts(classes),
    total: 0,
    shards: [],
    split: {validation: split.validation, test: split.test, seed: split.seed},
    fingerprint: sha256Hex(''),
    history: [],
  }
}

export interface NextVersion {
  previous: DatasetManifest | undefined
  image: ImageSpec
  split: SplitFractions
  classes: readonly string[]
  /** Every key in the store after the commit (committed ones and the new shards'). */
  keys: Iterable<string>
  /** The shards written since the last commit. */
  shards: readonly ShardInfo[]
  /** Their examples per split and class name. */
  counts: ReadonlyMap<SplitName, ReadonlyMap<string, number>>
  history: Omit<HistoryEntry, 'version' | 'at'>
  sources: SourceCheckpoints | undefined
  now: string
}

/** The manifest publishing `shards` as the version after `previous`. */
export function nextManifest(next: NextVersion): DatasetManifest {
  const {previous, now} = next
  const version = (previous?.version ?? 0) + 1
  const counts = emptyCounts(next.classes)
  if (previous) {
    for (const split of SPLITS) for (const [name, n] of Object.entries(previous.counts[split] ?? {})) counts[split][name] = n
  }
  let total = previous?.total ?? 0
  for (const shard of next.shards) total += shard.count
  for (const [split, byClass] of next.counts) for (const [name, n] of byClass) counts[split][name] = (counts[split][name] ?? 0) + n
  const manifest: DatasetManifest = {
    format: 'ml-dataset',
    formatVersion: 1,
    version,
    createdAt: previous?.createdAt ?? now,
    updatedAt: now,
    image: next.image,
    classes: [...next.classes],
    counts,
    total,
    // A shard lands in the version its commit got, which a shared writer learns only then.
    shards: [...(previous?.shards ?? []), ...next.shards.map((shard) => ({...shard, addedIn: version}))],
    split: {validation: next.split.validation, test: next.split.test, seed: next.split.seed},
    fingerprint: sha256Hex([...next.keys].sort().join('\n')),
    history: [...(previous?.history ?? []), {version, at: now, ...next.history}],
  }
  const sources = next.sources ?? previous?.sources
  if (sources !== undefined) manifest.sources = sources
  return manifest
}
