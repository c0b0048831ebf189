// The served side of the model repository <repo>/<model>/<version>/: which versions are loaded,
// polling for new, changed and removed ones, and swapping them in only once loaded and warmed up.
import {EventEmitter} from 'node:events'
import {mkdtemp, readdir, rm, stat} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {z} from 'zod'
import {ServeSplitSchema} from '../config/schema.js'
import {onnxAvailability, selectInference, type ExecutionProvider} from '../engine/inference.js'
import {listVersions, MODEL_FILES, readAliases, resolveLabel, versionsToServe} from '../model/repository.js'
import {downloadDir, exists, isRemote, joinPath, listEntries, listNames, readJson} from '../storage/index.js'
import {HttpError, notFound, unavailable} from './http-error.js'
import type {JsonLog} from './log.js'
import type {ServeMetrics} from './metrics.js'
import type {ServedModel, ServeOptions} from './options.js'
import type {Preprocessing} from './predictor.js'
import type {Scheduler} from './scheduler.js'
import {Splitter, type SplitRole, type TrafficSplit} from './split.js'
import type {LoadSpec, Runtime} from './worker-protocol.js'

export const ONNX_FILE = 'model.onnx'
/** <repository>/<model>/split.json: a canary split that replaces serve.models[].split, re-read on every scan. */
export const SPLIT_FILE = 'split.json'

/** TF Serving's state names, plus FAILED for a version that could not be loaded. */
export type VersionState = 'LOADING' | 'AVAILABLE' | 'UNLOADING' | 'FAILED'

export interface ModelVersion {
  model: string
  version: number
  /** `<model>/<version>`: the scheduler's and the instances' name for it. */
  key: string
  dir: string
  state: VersionState
  /** Why a FAILED version failed. */
  reason?: string
  runtime?: Runtime
  labels: string[]
  preprocessing?: Preprocessing
  /** [height, width, channels]. */
  inputShape: [number, number, number]
  /** Files, sizes and times: a FAILED version is retried only once this changes. */
  fingerprint: string
  /** The local copy the instances load, for a version on Cloud Storage. */
  localDir?: string
  loadMs?: number
  /** Requests holding this version (acquire/release); it is unloaded only when none do. */
  users: number
}

export interface ModelEntry {
  name: string
  labels: Record<string, number>
  /** The model's aliases (aliases.json), switched once the versions they name are loaded. */
  aliases: Record<string, number>
  /** Served as name@alias: only that alias's version, following it when it moves. */
  pin?: string
  /** Canary: requests naming no version are split between two versions. */
  split?: {config: TrafficSplit; splitter: Splitter; shown: Array<{version: string; role: SplitRole}>}
  /** serve.models[].split, in force while the model folder has no split.json. */
  configSplit?: TrafficSplit
  versions: Map<number, ModelVersion>
}

export interface VersionSelector {
  version?: string
  label?: string
}

export interface Lease {
  version: ModelVersion
  release(): void
}

/** What the repository needs from the instances. */
export interface ModelLoader {
  load(spec: LoadSpec): Promise<void>
  unload(key: string): Promise<void>
}

const PreprocessingFile = z.object({
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  channels: z.union([z.literal(1), z.literal(3)]),
  fit: z.enum(['fill', 'contain', 'cover']),
  scale: z.number(),
  offset: z.number(),
})

const LabelsFile = z.array(z.string()).min(1)

const WARMUP_MAX = 64

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

async function fingerprint(dir: string): Promise<string> {
  try {
    if (isRemote(dir)) return (await listEntries(dir)).map((e) => `${e.name}:${e.kind}:${e.size ?? ''}`).join('|')
    const names = (await readdir(dir)).sort()
    const parts = await Promise.all(names.map(async (name) => {
      const s = await stat(joinPath(dir, name))
      return `${name}:${s.size}:${s.mtimeMs}`
    }))
    return parts.join('|')
  } catch (error) {
    return `unreadable:${message(error)}`
  }
}

export class ModelRepository extends EventEmitter {
  readonly models = new Map<string, ModelEntry>()
  private scanning: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private scanned = false
  /** The aliases file as last read, per model (to report a move that waits only once). */
  private readonly aliasesRead = new Map<string, Record<string, number>>()
  /** The last problem logged per model's split.json (said once, not on every scan). */
  private readonly splitProblems = new Map<string, string>()
  /** Where versions on Cloud Storage are copied to be loaded (made on first use). */
  private cache: Promise<string> | undefined

  constructor(
    private readonly options: ServeOptions,
    private readonly loader: ModelLoader,
    private readonly scheduler: Scheduler,
    private readonly metrics: ServeMetrics,
    private readonly log: JsonLog,
  ) {
    super()
    for (const model of options.models ?? []) this.entry(model)
  }

  private entry(model: ServedModel): ModelEntry {
    let entry = this.models.get(model.name)
    if (entry === undefined) {
      entry = {
        name: model.name,
        labels: model.labels,
        aliases: {},
        ...(model.pin ? {pin: model.pin} : {}),
        ...(model.split ? {split: {config: model.split, splitter: new Splitter(model.split.percent), shown: []}, configSplit: model.split} : {}),
        versions: new Map(),
      }
      this.models.set(model.name, entry)
    }
    return entry
  }

  /** The first scan (every version is loaded before it resolves), then polling. */
  async start(): Promise<void> {
    await this.scan()
    this.schedule()
  }

  private schedule(): void {
    if (this.stopped || this.options.pollIntervalMs <= 0) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      void this.scan().finally(() => this.schedule())
    }, this.options.pollIntervalMs)
  }

  /** One pass over the repository; concurrent calls share the pass in progress. */
  scan(): Promise<void> {
    this.scanning ??= this.scanOnce()
      .catch((error) => this.log.event('warn', 'repository-scan-failed', {repository: this.options.repository, reason: message(error)}))
      .finally(() => {
        this.scanning = undefined
        this.scanned = true
      })
    return this.scanning
  }

  private async modelNames(): Promise<string[]> {
    if (this.options.models) return this.options.models.map((m) => m.name)
    const names: string[] = []
    for (const name of await listNames(this.options.repository)) {
      if (name.startsWith('.')) continue
      if ((await listVersions(this.options.repository, name)).length > 0) names.push(name)
    }
    return names
  }

  private async scanOnce(): Promise<void> {
    const names = await this.modelNames()
    for (const name of names) {
      if (this.stopped) return
      await this.scanModel(this.entry({name, labels: {}}))
    }
    // A model folder that disappeared (only when serving whatever the repository holds).
    for (const entry of [...this.models.values()]) {
      if (names.includes(entry.name)) continue
      for (const version of [...entry.versions.values()]) await this.unloadVersion(entry, version)
      this.models.delete(entry.name)
    }
  }

  private async scanModel(entry: ModelEntry): Promise<void> {
    const onDisk = await listVersions(this.options.repository, entry.name)
    const limit = this.options.versionPolicy === 'all' ? Number.POSITIVE_INFINITY : this.options.versionPolicy.latest
    const wanted = new Set<number>()
    const aliases = await this.readAliases(entry)
    if (entry.pin === undefined) this.setSplit(entry, await this.readSplit(entry))
    const {candidates, always} = versionsToServe(onDisk, aliases, entry.pin)
    const ensure = async (version: number) => {
      const dir = joinPath(this.options.repository, entry.name, String(version))
      const known = entry.versions.get(version)
      if (known === undefined) await this.loadVersion(entry, version, dir)
      else if (known.state === 'FAILED' && known.fingerprint !== (await fingerprint(dir))) await this.loadVersion(entry, version, dir)
      if (entry.versions.get(version)?.state === 'AVAILABLE') wanted.add(version)
    }
    // Newest first, so that a new latest version is served as soon as possible. A version that
    // failed does not count towards the policy: the older one it would replace keeps serving.
    for (const version of candidates) {
      if (wanted.size >= limit || this.stopped) break
      await ensure(version)
    }
    // The versions of a canary split stay loaded whatever the policy (an alias's version already is).
    const splitVersions = [entry.split?.config.stable, entry.split?.config.canary].filter((v): v is number => typeof v === 'number' && onDisk.includes(v))
    for (const version of [...always, ...splitVersions]) if (!this.stopped) await ensure(version)
    this.switchAliases(entry, aliases, wanted)
    this.showSplit(entry)
    for (const version of [...entry.versions.values()]) {
      if (version.state === 'AVAILABLE' && !wanted.has(version.version)) await this.unloadVersion(entry, version)
      else if (version.state === 'FAILED' && !onDisk.includes(version.version)) entry.versions.delete(version.version)
    }
  }

  /** The model's aliases.json; on a read error the aliases in use stay (and the error is logged). */
  private async readAliases(entry: ModelEntry): Promise<Record<string, number>> {
    try {
      return (await readAliases(this.options.repository, entry.name)).aliases
    } catch (error) {
      this.log.event('warn', 'aliases-unreadable', {model: entry.name, reason: message(error)})
      return entry.aliases
    }
  }

  /**
   * Moves aliases to their new versions once those are loaded; an alias whose new version is not
   * available keeps its old one (kept loaded), so a move never turns requests into errors.
   */
  private switchAliases(entry: ModelEntry, aliases: Record<string, number>, wanted: Set<number>): void {
    const next: Record<string, number> = {}
    const seen = this.aliasesRead.get(entry.name) ?? {}
    for (const [alias, version] of Object.entries(aliases)) {
      const old = entry.aliases[alias]
      const keepOld = !wanted.has(version) && old !== undefined && entry.versions.get(old)?.state === 'AVAILABLE'
      next[alias] = keepOld ? old : version
      if (keepOld) wanted.add(old)
      // Said once per move of the file, not on every scan while the move waits.
      if (keepOld && seen[alias] !== version) this.log.event('warn', 'alias-not-moved', {model: entry.name, alias, version, kept: old, reason: `version ${version} is not available`})
      else if (!keepOld && old !== version) this.log.event('info', 'alias-moved', {model: entry.name, alias, version, ...(old === undefined ? {} : {previous: old})})
    }
    this.aliasesRead.set(entry.name, aliases)
    entry.aliases = next
  }

  private async readVersion(dir: string): Promise<{runtime: Runtime; providers: ExecutionProvider[]; labels: string[]; preprocessing: Preprocessing}> {
    const hasJson = await exists(joinPath(dir, MODEL_FILES.modelJson))
    const hasOnnx = await exists(joinPath(dir, ONNX_FILE))
    const preference = this.options.runtime
    if (preference === 'tfjs' && !hasJson) throw new Error(`${MODEL_FILES.modelJson} not found (serve.runtime is tfjs)`)
    if (preference === 'onnx' && !hasOnnx) throw new Error(`${ONNX_FILE} not found (serve.runtime is onnx)`)
    if (!hasJson && !hasOnnx) throw new Error(`neither ${MODEL_FILES.modelJson} nor ${ONNX_FILE} found`)
    const ort = await onnxAvailability()
    if (preference === 'onnx' && !ort.available) throw new Error(ort.notes[0] ?? 'ONNX Runtime is not available')
    // The engine module's rule: ONNX Runtime when the version has model.onnx and it loads.
    const choice = selectInference(preference, {hasOnnx}, ort)
    const runtime: Runtime = choice.runtime === 'onnx' || !hasJson ? 'onnx' : 'tfjs'
    if (runtime === 'onnx' && !ort.available) throw new Error(`only ${ONNX_FILE} found, and ${ort.notes[0] ?? 'ONNX Runtime is not available'}`)
    const labels = LabelsFile.safeParse(await readJson(joinPath(dir, MODEL_FILES.labels)).catch((error) => {
      throw new Error(`${MODEL_FILES.labels}: ${message(error)}`)
    }))
    if (!labels.success) throw new Error(`${MODEL_FILES.labels} must be a non-empty array of strings`)
    const preprocessing = PreprocessingFile.safeParse(await readJson(joinPath(dir, MODEL_FILES.preprocessing)).catch((error) => {
      throw new Error(`${MODEL_FILES.preprocessing}: ${message(error)}`)
    }))
    if (!preprocessing.success) throw new Error(`${MODEL_FILES.preprocessing} is invalid: ${preprocessing.error.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('; ')}`)
    return {runtime, providers: runtime === 'onnx' ? ort.providers : [], labels: labels.data, preprocessing: preprocessing.data}
  }

  /**
   * A version on Cloud Storage is copied to a local folder first: the runtimes load files, and a
   * copy taken once cannot change under a model that is serving.
   */
  private async localCopy(record: ModelVersion): Promise<string> {
    if (!isRemote(record.dir)) return record.dir
    this.cache ??= mkdtemp(path.join(os.tmpdir(), 'ml-serve-models-'))
    const local = path.join(await this.cache, `${record.model}-${record.version}-${Date.now().toString(36)}`)
    record.localDir = local
    const files = await downloadDir(record.dir, local)
    if (files === 0) throw new Error(`${record.dir} holds no files`)
    return local
  }

  private async dropLocalCopy(record: ModelVersion): Promise<void> {
    if (record.localDir === undefined) return
    await rm(record.localDir, {recursive: true, force: true}).catch(() => {})
    record.localDir = undefined
  }

  private async loadVersion(entry: ModelEntry, version: number, dir: string): Promise<void> {
    const key = `${entry.name}/${version}`
    const record: ModelVersion = {model: entry.name, version, key, dir, state: 'LOADING', labels: [], inputShape: [0, 0, 0], fingerprint: await fingerprint(dir), users: 0}
    entry.versions.set(version, record)
    const labels = {model: entry.name, version: String(version)}
    const started = performance.now()
    this.log.event('info', 'model-loading', {model: entry.name, version, dir})
    try {
      const local = await this.localCopy(record)
      const meta = await this.readVersion(local)
      const p = meta.preprocessing
      record.runtime = meta.runtime
      record.labels = meta.labels
      record.preprocessing = p
      record.inputShape = [p.height, p.width, p.channels]
      const warmup = [...new Set([1, Math.min(this.options.maxBatchSize, WARMUP_MAX)])]
      await this.loader.load({key, dir: local, runtime: meta.runtime, threads: this.options.threads, providers: meta.providers, inputShape: record.inputShape, numClasses: meta.labels.length, warmup})
      this.scheduler.addModel({key, model: entry.name, version: String(version), outputSize: meta.labels.length})
      record.loadMs = Math.round(performance.now() - started)
      record.state = 'AVAILABLE'
      this.metrics.modelLoads.inc({...labels, result: 'success'})
      this.metrics.modelReady.set(labels, 1)
      this.log.event('info', 'model-loaded', {model: entry.name, version, runtime: meta.runtime, ...(meta.providers.length ? {providers: meta.providers} : {}), ms: record.loadMs})
      this.emit('loaded', record)
    } catch (error) {
      record.state = 'FAILED'
      record.reason = message(error)
      await this.dropLocalCopy(record)
      // Fingerprint again: files may have been written while loading; the next change retries.
      record.fingerprint = await fingerprint(dir)
      this.metrics.modelLoads.inc({...labels, result: 'failure'})
      this.log.event('error', 'model-load-failed', {model: entry.name, version, dir, reason: record.reason})
      this.emit('failed', record)
    }
  }

  private async unloadVersion(entry: ModelEntry, record: ModelVersion): Promise<void> {
    if (record.state !== 'AVAILABLE') {
      entry.versions.delete(record.version)
      return
    }
    record.state = 'UNLOADING'
    // Requests that already hold this version finish on it.
    while (record.users > 0) await new Promise((resolve) => this.once(`released:${record.key}`, resolve))
    await this.scheduler.removeModel(record.key)
    await this.loader.unload(record.key)
    await this.dropLocalCopy(record)
    entry.versions.delete(record.version)
    const labels = {model: entry.name, version: String(record.version)}
    this.metrics.modelReady.remove(labels)
    this.metrics.modelLoads.inc({...labels, result: 'unloaded'})
    this.log.event('info', 'model-unloaded', {model: entry.name, version: record.version})
    this.emit('unloaded', record)
  }

  /**
   * The split in force: the model folder's split.json when there is one, else serve.models[].split.
   * A file that cannot be read or is invalid leaves the split in use as it is (and is logged).
   */
  private async readSplit(entry: ModelEntry): Promise<TrafficSplit | undefined> {
    const file = joinPath(this.options.repository, entry.name, SPLIT_FILE)
    try {
      if (!(await exists(file))) return entry.configSplit
      const parsed = ServeSplitSchema.safeParse(await readJson(file))
      if (parsed.success) return parsed.data
      const reason = parsed.error.issues.map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`).join('; ')
      if (this.splitProblems.get(entry.name) !== reason) this.log.event('warn', 'split-invalid', {model: entry.name, file, reason})
      this.splitProblems.set(entry.name, reason)
    } catch (error) {
      this.log.event('warn', 'split-unreadable', {model: entry.name, file, reason: message(error)})
    }
    return entry.split?.config
  }

  /** Puts a split in force; a changed one starts counting afresh. */
  private setSplit(entry: ModelEntry, split: TrafficSplit | undefined): void {
    const current = entry.split?.config
    if (JSON.stringify(current) === JSON.stringify(split)) return
    if (split === undefined) {
      for (const old of entry.split?.shown ?? []) this.metrics.trafficSplit.remove({model: entry.name, ...old})
      entry.split = undefined
    } else entry.split = {config: split, splitter: new Splitter(split.percent), shown: entry.split?.shown ?? []}
    this.splitProblems.delete(entry.name)
    this.log.event('info', 'split-changed', {model: entry.name, split: split ?? null, ...(current ? {previous: current} : {})})
  }

  /** A split's version for a role: its number, or the version its label or alias names now. */
  private splitVersion(entry: ModelEntry, role: SplitRole): number | undefined {
    const ref = entry.split?.config[role]
    if (ref === undefined) return undefined
    return typeof ref === 'number' ? ref : resolveLabel(ref, entry.labels, entry.aliases)
  }

  /** The split in the metrics (SERVE.trafficSplit): each version's share, updated when an alias moves. */
  private showSplit(entry: ModelEntry): void {
    if (entry.split === undefined) return
    const stable = this.splitVersion(entry, 'stable')
    const canary = this.splitVersion(entry, 'canary')
    const percent = entry.split.config.percent
    const shares: Array<{version: string; role: SplitRole; share: number}> = []
    if (stable !== undefined) shares.push({version: String(stable), role: 'stable', share: canary === undefined || canary === stable ? 100 : 100 - percent})
    if (canary !== undefined && canary !== stable) shares.push({version: String(canary), role: 'canary', share: stable === undefined ? 100 : percent})
    for (const old of entry.split.shown) {
      if (!shares.some((s) => s.version === old.version && s.role === old.role)) this.metrics.trafficSplit.remove({model: entry.name, ...old})
    }
    for (const {version, role, share} of shares) this.metrics.trafficSplit.set({model: entry.name, version, role}, share)
    entry.split.shown = shares.map(({version, role}) => ({version, role}))
  }

  /**
   * The version a split sends a request naming no version to: for an inference request the splitter
   * decides (by count, or by `key`, the sticky header's value), for anything else (metadata) it is
   * the stable version. A role whose version is not available gives its share to the other; undefined
   * when the model has no split or neither version is available (the usual choice then applies).
   */
  route(name: string, inference: boolean, key?: string): {version: number; role: SplitRole} | undefined {
    const entry = this.models.get(name)
    if (entry?.split === undefined) return undefined
    const available = (role: SplitRole) => {
      const version = this.splitVersion(entry, role)
      return version !== undefined && entry.versions.get(version)?.state === 'AVAILABLE' ? version : undefined
    }
    const stable = available('stable')
    const canary = available('canary')
    if (stable === undefined || canary === undefined || stable === canary) {
      const only = stable ?? canary
      return only === undefined ? undefined : {version: only, role: only === stable ? 'stable' : 'canary'}
    }
    const role = inference ? entry.split.splitter.next(key) : 'stable'
    return {version: role === 'canary' ? canary : stable, role}
  }

  /** The header whose value keeps a caller of this model on one version, if its split has one. */
  stickyHeader(name: string): string | undefined {
    return this.models.get(name)?.split?.config.stickyHeader
  }

  /** The model, or 404. */
  model(name: string): ModelEntry {
    const entry = this.models.get(name)
    if (entry === undefined) throw notFound(`unknown model "${name}"${this.models.size ? `; served: ${[...this.models.keys()].join(', ')}` : ''}`)
    return entry
  }

  /** The version a request names (number or label), else the newest available one; 404 or 503 if none. */
  find(name: string, selector: VersionSelector = {}): ModelVersion {
    const entry = this.model(name)
    let wanted: number | undefined
    if (selector.label !== undefined) {
      wanted = resolveLabel(selector.label, entry.labels, entry.aliases)
      if (wanted === undefined) {
        const known = [...new Set([...Object.keys(entry.labels), ...Object.keys(entry.aliases)])]
        throw notFound(`model "${name}" has no version label "${selector.label}"${known.length ? ` (labels: ${known.join(', ')})` : ' (set serve.models[].labels, or an alias with `ml models alias`)'}`)
      }
    } else if (selector.version !== undefined) {
      if (!/^[1-9][0-9]{0,15}$/.test(selector.version)) throw new HttpError(400, `invalid version "${selector.version}": expected a positive integer`)
      wanted = Number(selector.version)
    } else if (entry.pin !== undefined) {
      wanted = entry.aliases[entry.pin]
      if (wanted === undefined) throw notFound(`model "${name}" is served as ${name}@${entry.pin}, but alias "${entry.pin}" is not set`)
    }
    if (wanted !== undefined) {
      const record = entry.versions.get(wanted)
      if (record === undefined) throw notFound(`version ${wanted} of model "${name}" not found`)
      if (record.state === 'LOADING') throw unavailable(`version ${wanted} of model "${name}" is loading`)
      if (record.state === 'FAILED') throw notFound(`version ${wanted} of model "${name}" failed to load: ${record.reason}`)
      if (record.state === 'UNLOADING') throw notFound(`version ${wanted} of model "${name}" is being unloaded`)
      return record
    }
    let latest: ModelVersion | undefined
    for (const record of entry.versions.values()) if (record.state === 'AVAILABLE' && (latest === undefined || record.version > latest.version)) latest = record
    if (latest !== undefined) return latest
    if ([...entry.versions.values()].some((v) => v.state === 'LOADING')) throw unavailable(`model "${name}" is loading`)
    const failed = [...entry.versions.values()].filter((v) => v.state === 'FAILED').map((v) => `version ${v.version}: ${v.reason}`)
    throw notFound(`model "${name}" has no available version${failed.length ? ` (${failed.join('; ')})` : ''}`)
  }

  /** find() plus a hold that keeps the version loaded until release(). */
  acquire(name: string, selector: VersionSelector = {}): Lease {
    const version = this.find(name, selector)
    version.users++
    let released = false
    return {
      version,
      release: () => {
        if (released) return
        released = true
        if (--version.users === 0 && version.state === 'UNLOADING') this.emit(`released:${version.key}`)
      },
    }
  }

  /** True after the first scan while every served model has an available version. */
  ready(): boolean {
    if (!this.scanned || this.models.size === 0) return false
    for (const entry of this.models.values()) if (![...entry.versions.values()].some((v) => v.state === 'AVAILABLE')) return false
    return true
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    await this.scanning
    if (this.cache !== undefined) await rm(await this.cache, {recursive: true, force: true}).catch(() => {})
  }
}
