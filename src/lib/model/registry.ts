// The model registry view of the repository: every exported version with its formats, test
// accuracy, dataset version and the aliases pointing at it (`ml models list`).
import {resolvePath, type LoadedConfig} from '../config/load.js'
import {isUserError} from '../errors.js'
import {exists, joinPath, listNames, readJson, resolveLocation} from '../storage/index.js'
import {textTable} from '../ui/table.js'
import {aliasesByVersion, listVersions, MODEL_FILES, readAliases} from './repository.js'

export interface RegistryVersion {
  name: string
  version: number
  formats: string[]
  /** Test accuracy measured at export (the card's), when there was a test split. */
  accuracy?: number
  datasetVersion?: number
  aliases: string[]
  runId?: string
  quantization?: string
  /** Why the version's card could not be read (it is listed all the same). */
  note?: string
}

interface CardLike {
  runId?: string
  dataset?: {version?: number}
  evaluation?: {accuracy?: number | null; datasetVersion?: number | null}
  metrics?: {test?: {accuracy?: number}}
  formats?: Array<{format?: string; quantization?: string}>
  quantization?: {mode?: string}
}

/** Formats told by the files, for a version without a model card (copied in by hand). */
async function formatsOnDisk(dir: string): Promise<string[]> {
  const formats: string[] = []
  if (await exists(joinPath(dir, MODEL_FILES.modelJson))) formats.push('tfjs')
  if (await exists(joinPath(dir, MODEL_FILES.onnx))) formats.push('onnx')
  if (await exists(joinPath(dir, 'config.pbtxt'))) formats.push('triton')
  return formats
}

async function versionRow(repoDir: string, name: string, version: number, aliases: string[]): Promise<RegistryVersion> {
  const dir = joinPath(repoDir, name, String(version))
  const row: RegistryVersion = {name, version, formats: [], aliases}
  let card: CardLike | undefined
  if (await exists(joinPath(dir, MODEL_FILES.card))) {
    card = await readJson<CardLike>(joinPath(dir, MODEL_FILES.card)).catch((error: Error) => {
      row.note = `${MODEL_FILES.card}: ${error.message}`
      return undefined
    })
  }
  const formats = card?.formats?.map((f) => f.format).filter((f): f is string => typeof f === 'string') ?? []
  row.formats = formats.length ? formats : await formatsOnDisk(dir)
  const accuracy = card?.evaluation?.accuracy ?? card?.metrics?.test?.accuracy
  if (typeof accuracy === 'number') row.accuracy = accuracy
  const datasetVersion = card?.evaluation?.datasetVersion ?? card?.dataset?.version
  if (typeof datasetVersion === 'number') row.datasetVersion = datasetVersion
  if (card?.runId) row.runId = card.runId
  if (card?.quantization?.mode) row.quantization = card.quantization.mode
  return row
}

/** Every version of the named models (default: every model folder in the repository), by name then version. */
export async function listRegistry(repoDir: string, names?: readonly string[]): Promise<RegistryVersion[]> {
  const models = names ?? (await listNames(repoDir)).filter((n) => !n.startsWith('.'))
  const rows: RegistryVersion[] = []
  for (const name of models) {
    const versions = await listVersions(repoDir, name)
    if (versions.length === 0) continue
    const by = aliasesByVersion(await readAliases(repoDir, name))
    for (const version of versions) rows.push(await versionRow(repoDir, name, version, by.get(version) ?? []))
  }
  return rows
}

const fixed = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(4))

/** The table `ml models list` prints. */
export function registryTable(rows: readonly RegistryVersion[]): string {
  return textTable(
    ['name', 'version', 'formats', 'accuracy', 'dataset', 'aliases', 'run'],
    rows.map((r) => [r.name, String(r.version), r.formats.join(',') || '-', fixed(r.accuracy), r.datasetVersion === undefined ? '-' : `v${r.datasetVersion}`, r.aliases.join(',') || '-', r.runId ?? '-']),
  )
}

type ConfigLoader = (file: string) => Promise<LoadedConfig>

/** The repository a registry command works on: --repository, else the config's export.dir (a bare --repository needs no config). */
export async function registryDir(configFile: string, repository: string | undefined, load: ConfigLoader): Promise<string> {
  if (repository) return resolveLocation(repository)
  const loaded = await load(configFile)
  return resolvePath(loaded, loaded.config.export.dir)
}

/** The repository and model name a registry command changes: --model or the config's name. */
export async function registryTarget(flags: {config: string; repository?: string; model?: string}, load: ConfigLoader): Promise<{repository: string; name: string}> {
  let loaded: LoadedConfig | undefined
  try {
    loaded = await load(flags.config)
  } catch (error) {
    if (!(isUserError(error) && error.code === 'CONFIG_NOT_FOUND' && flags.repository && flags.model)) throw error
  }
  const repository = flags.repository ? resolveLocation(flags.repository) : resolvePath(loaded!, loaded!.config.export.dir)
  return {repository, name: flags.model ?? loaded!.config.name}
}
