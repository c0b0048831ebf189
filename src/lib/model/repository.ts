// The model repository: `<dir>/<name>/<version>/` folders written by `ml export`, their file names,
// version listing, and which model a command should use when the user names none.
import path from 'node:path'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import {errorCode, exists, joinPath, listNames, readJson, readVersioned, remove, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
import {MODEL_FILES} from './files.js'
import {resolveRunDir, RUN_FILES} from './run-dir.js'

/** The files of a model version folder (and of a run's model folder, which holds the first two). */
export {MODEL_FILES}

/** Numeric version folders of a model in the repository, ascending. */
export async function listVersions(repoDir: string, name: string): Promise<number[]> {
  return (await listNames(joinPath(repoDir, name)))
    .filter((n) => /^[1-9][0-9]*$/.test(n))
    .map(Number)
    .sort((a, b) => a - b)
}

/** Which model a command uses, and how it was found: the model is named in every command's output. */
export interface ResolvedModel {
  dir: string
  /** model: --model; run: --run; export: the latest exported version; latest-run: no export yet, the latest run. */
  source: 'model' | 'run' | 'export' | 'latest-run'
  /** A short human name: "digits version 3", "run digits-20261124-101500". */
  description: string
}

/**
 * Finds the model a command should use: --model (an export version folder or a model folder in the
 * repository, meaning its latest version), --run (a run's model), else the latest exported version
 * of the config's model, else the latest run.
 */
export async function resolveModel(loaded: LoadedConfig, options: {model?: string; run?: string}): Promise<ResolvedModel> {
  if (options.model) {
    const named = options.model.split(/[\\/]/).filter(Boolean)
    if ((await exists(joinPath(options.model, MODEL_FILES.modelJson))) || (await exists(joinPath(options.model, MODEL_FILES.onnx)))) {
      return {dir: options.model, source: 'model', description: named.length >= 2 && /^[1-9][0-9]*$/.test(named.at(-1)!) ? `${named.at(-2)} version ${named.at(-1)}` : options.model}
    }
    // name@alias or name@<version>: a version of a model in the config's repository.
    const ref = parseModelRef(options.model)
    if (ref.alias !== undefined || ref.version !== undefined) {
      const found = await resolveModelRef(resolvePath(loaded, loaded.config.export.dir), options.model)
      return {dir: found.dir, source: 'model', description: `${found.name} version ${found.version} (${options.model})`}
    }
    const versions = await listVersions(joinPath(options.model, '..'), named.at(-1)!)
    if (versions.length) return {dir: joinPath(options.model, String(versions.at(-1))), source: 'model', description: `${named.at(-1)} version ${versions.at(-1)}`}
    throw new UserError(`no model in ${options.model}`, {code: 'MODEL_NOT_FOUND', exit: 'data', suggestions: ['Point --model at a folder written by `ml export`.']})
  }
  const runsDir = resolvePath(loaded, loaded.config.train.runs)
  if (options.run) {
    const runDir = await resolveRunDir(runsDir, options.run)
    return {dir: joinPath(runDir, RUN_FILES.model), source: 'run', description: `run ${path.basename(runDir)}`}
  }
  const repo = resolvePath(loaded, loaded.config.export.dir)
  const versions = await listVersions(repo, loaded.config.name)
  if (versions.length) return {dir: joinPath(repo, loaded.config.name, String(versions.at(-1))), source: 'export', description: `${loaded.config.name} version ${versions.at(-1)}`}
  const runDir = await resolveRunDir(runsDir)
  return {dir: joinPath(runDir, RUN_FILES.model), source: 'latest-run', description: `run ${path.basename(runDir)} (latest run, not exported: \`ml export\` to use an export)`}
}

/** resolveModel's folder. */
export async function resolveModelDir(loaded: LoadedConfig, options: {model?: string; run?: string}): Promise<string> {
  return (await resolveModel(loaded, options)).dir
}

// ---- Aliases: names (production, staging, ...) that point at a version of a model, kept in
// <repo>/<model>/aliases.json with the history of every move, so that a rollback knows where to go.
// The server reads the file on every repository scan: moving an alias moves traffic, no restart.

export const ALIASES_FILE = 'aliases.json'
/** The names an alias may have: the same as TF Serving version labels, so that each is one. */
export const ALIAS_PATTERN = /^[a-zA-Z][a-zA-Z0-9_-]{0,62}$/

export interface AliasMove {
  alias: string
  /** The version the alias points at after the move (null: removed). */
  version: number | null
  previous: number | null
  action: 'set' | 'rollback' | 'remove'
  at: string
}

export interface AliasesFile {
  /** Alias -> version. */
  aliases: Record<string, number>
  /** Every move, oldest first. */
  history: AliasMove[]
}

const aliasesPath = (repoDir: string, name: string) => joinPath(repoDir, name, ALIASES_FILE)

function parseAliases(text: string, file: string): AliasesFile {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new UserError(`${file} is not valid JSON: ${(error as Error).message}`, {code: 'ALIASES_INVALID', exit: 'data', suggestions: [`Fix or delete ${file}; aliases are set again with \`ml models alias\`.`]})
  }
  const v = value as Partial<AliasesFile> | null
  const ok =
    v !== null &&
    typeof v === 'object' &&
    typeof v.aliases === 'object' &&
    v.aliases !== null &&
    Object.entries(v.aliases).every(([k, n]) => ALIAS_PATTERN.test(k) && Number.isInteger(n) && (n as number) > 0) &&
    (v.history === undefined || Array.isArray(v.history))
  if (!ok) throw new UserError(`${file} is not an aliases file ({"aliases": {"<alias>": <version>}, "history": [...]})`, {code: 'ALIASES_INVALID', exit: 'data', suggestions: [`Fix or delete ${file}.`]})
  return {aliases: {...v!.aliases}, history: [...(v!.history ?? [])]}
}

/** The aliases of a model (none when the file does not exist). */
export async function readAliases(repoDir: string, name: string): Promise<AliasesFile> {
  const file = aliasesPath(repoDir, name)
  const read = await readVersioned(file)
  return read ? parseAliases(read.data.toString('utf8'), file) : {aliases: {}, history: []}
}

/** Alias names pointing at each version. */
export function aliasesByVersion(file: AliasesFile): Map<number, string[]> {
  const by = new Map<number, string[]>()
  for (const [alias, version] of Object.entries(file.aliases).sort(([a], [b]) => (a < b ? -1 : 1))) by.set(version, [...(by.get(version) ?? []), alias])
  return by
}

/** A lock file older than this is left by a process that died holding it. */
const STALE_LOCK_MS = 30_000
const LOCK_WAIT_MS = 10_000

/**
 * Read-modify-write of aliases.json under a lock file (created only if absent, exact locally and on
 * Cloud Storage), so that two `ml models alias` at once never lose a move; the write is a
 * compare-and-swap on the file's revision besides.
 */
async function updateAliases(repoDir: string, name: string, change: (file: AliasesFile) => AliasMove): Promise<{file: AliasesFile; move: AliasMove}> {
  const file = aliasesPath(repoDir, name)
  const lock = `${file}.lock`
  const deadline = Date.now() + LOCK_WAIT_MS
  for (;;) {
    try {
      await writeFileAtomic(lock, JSON.stringify({pid: process.pid, at: new Date().toISOString()}), {createOnly: true})
      break
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error
      const held = await readJson<{at?: string}>(lock).catch(() => ({at: undefined}))
      if (held.at && Date.now() - Date.parse(held.at) > STALE_LOCK_MS) await remove(lock)
      else if (Date.now() > deadline) {
        throw new UserError(`${lock} is held by another \`ml models\` command`, {code: 'ALIASES_LOCKED', exit: 'service', suggestions: [`Try again; if no other command is running, delete ${lock}.`]})
      } else await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20))
    }
  }
  try {
    const read = await readVersioned(file)
    const current = read ? parseAliases(read.data.toString('utf8'), file) : {aliases: {}, history: []}
    const move = change(current)
    current.history.push(move)
    await writeFileAtomic(file, JSON.stringify(current, null, 2) + '\n', read ? {ifRevision: read.revision} : {createOnly: true})
    return {file: current, move}
  } finally {
    await remove(lock)
  }
}

function checkAlias(alias: string): void {
  if (!ALIAS_PATTERN.test(alias) || /^[0-9]/.test(alias)) {
    throw new UserError(`invalid alias "${alias}": letters, digits, "_" and "-", starting with a letter`, {code: 'USAGE', exit: 'usage', suggestions: ['e.g. production, staging, canary.']})
  }
}

/** Points `alias` at `version` of model `name` (which must exist in the repository). */
export async function setAlias(repoDir: string, name: string, alias: string, version: number): Promise<{file: AliasesFile; move: AliasMove}> {
  checkAlias(alias)
  const versions = await listVersions(repoDir, name)
  if (!versions.includes(version)) {
    throw new UserError(`model ${name} has no version ${version} in ${repoDir}${versions.length ? ` (versions: ${versions.join(', ')})` : ''}`, {
      code: 'MODEL_VERSION_NOT_FOUND',
      exit: 'data',
      suggestions: versions.length ? ['List versions with `ml models list`.'] : ['Export a model first: `ml export`.'],
    })
  }
  return updateAliases(repoDir, name, (file) => {
    const previous = file.aliases[alias] ?? null
    file.aliases[alias] = version
    return {alias, version, previous, action: 'set', at: new Date().toISOString()}
  })
}

/** Removes an alias. */
export async function removeAlias(repoDir: string, name: string, alias: string): Promise<{file: AliasesFile; move: AliasMove}> {
  return updateAliases(repoDir, name, (file) => {
    const previous = file.aliases[alias]
    if (previous === undefined) throw new UserError(`model ${name} has no alias "${alias}"`, {code: 'ALIAS_NOT_FOUND', exit: 'data', suggestions: ['List aliases with `ml models list`.']})
    delete file.aliases[alias]
    return {alias, version: null, previous, action: 'remove', at: new Date().toISOString()}
  })
}

/**
 * The versions an alias pointed at, oldest first, as moves and rollbacks leave them: a set pushes, a
 * rollback pops, a removal clears. Its last entry is where the alias points now.
 */
export function aliasStack(history: readonly AliasMove[], alias: string): number[] {
  const stack: number[] = []
  for (const move of history) {
    if (move.alias !== alias) continue
    if (move.action === 'set' && move.version !== null) {
      if (stack.at(-1) !== move.version) stack.push(move.version)
    } else if (move.action === 'rollback') {
      while (stack.length && stack.at(-1) !== move.version) stack.pop()
    }
    else if (move.action === 'remove') stack.length = 0
  }
  return stack
}

/**
 * Moves an alias back to the version it pointed at before its latest move (again: further back).
 * A version deleted from the repository since is skipped.
 */
export async function rollbackAlias(repoDir: string, name: string, alias: string): Promise<{file: AliasesFile; move: AliasMove}> {
  const versions = new Set(await listVersions(repoDir, name))
  return updateAliases(repoDir, name, (file) => {
    const current = file.aliases[alias]
    if (current === undefined) throw new UserError(`model ${name} has no alias "${alias}"`, {code: 'ALIAS_NOT_FOUND', exit: 'data', suggestions: [`Set it with \`ml models alias <version> ${alias}\`.`]})
    const stack = aliasStack(file.history, alias)
    stack.pop()
    while (stack.length && !versions.has(stack.at(-1)!)) stack.pop()
    const target = stack.at(-1)
    if (target === undefined) {
      throw new UserError(`alias "${alias}" of model ${name} has no earlier version to roll back to (it points at ${current})`, {
        code: 'NOTHING_TO_ROLL_BACK',
        exit: 'usage',
        suggestions: [`Point it at a version with \`ml models alias <version> ${alias}\`.`],
      })
    }
    file.aliases[alias] = target
    return {alias, version: target, previous: current, action: 'rollback', at: new Date().toISOString()}
  })
}

/** `name@alias` or `name@<version>` (a plain name: undefined selector). */
export function parseModelRef(ref: string): {name: string; alias?: string; version?: number} {
  const at = ref.lastIndexOf('@')
  if (at <= 0 || at === ref.length - 1) return {name: ref}
  const name = ref.slice(0, at)
  const selector = ref.slice(at + 1)
  if (/^[1-9][0-9]*$/.test(selector)) return {name, version: Number(selector)}
  return {name, alias: selector}
}

/**
 * The version a label names: a serve.models[].labels entry first (explicit config wins), then the
 * model's aliases. Undefined when neither has it.
 */
export function resolveLabel(label: string, labels: Readonly<Record<string, number>>, aliases: Readonly<Record<string, number>>): number | undefined {
  return Object.hasOwn(labels, label) ? labels[label] : Object.hasOwn(aliases, label) ? aliases[label] : undefined
}

/** The version folder `name@alias` (or `name@<version>`) names in a repository. */
export async function resolveModelRef(repoDir: string, ref: string): Promise<{name: string; version: number; dir: string}> {
  const {name, alias, version} = parseModelRef(ref)
  const versions = await listVersions(repoDir, name)
  let wanted = version
  if (alias !== undefined) {
    const file = await readAliases(repoDir, name)
    wanted = file.aliases[alias]
    if (wanted === undefined) {
      const known = Object.keys(file.aliases)
      throw new UserError(`model ${name} has no alias "${alias}"${known.length ? ` (aliases: ${known.join(', ')})` : ''}`, {
        code: 'ALIAS_NOT_FOUND',
        exit: 'data',
        suggestions: [`Set it with \`ml models alias <version> ${alias}\`.`],
      })
    }
  }
  if (wanted === undefined) wanted = versions.at(-1)
  if (wanted === undefined || !versions.includes(wanted)) {
    throw new UserError(`no model ${name}${wanted === undefined ? '' : ` version ${wanted}`} in ${repoDir}`, {code: 'MODEL_NOT_FOUND', exit: 'data', suggestions: ['List models with `ml models list`.']})
  }
  return {name, version: wanted, dir: joinPath(repoDir, name, String(wanted))}
}

/**
 * Which versions a server should load: `candidates`, newest first, up to the version policy, and
 * `always`, loaded whatever the policy: the versions aliases point at (only the pinned alias's one
 * when the model is served as name@alias, and then no candidates).
 */
export function versionsToServe(onDisk: readonly number[], aliases: Readonly<Record<string, number>>, pin?: string): {candidates: number[]; always: number[]} {
  const present = new Set(onDisk)
  if (pin !== undefined) {
    const v = aliases[pin]
    return {candidates: [], always: v !== undefined && present.has(v) ? [v] : []}
  }
  const always = [...new Set(Object.values(aliases))].filter((v) => present.has(v)).sort((a, b) => b - a)
  return {candidates: [...onDisk].sort((a, b) => b - a), always}
}
