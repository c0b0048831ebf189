// The server's settings, resolved once from ml.yaml (serve.*, export.dir, data limits) and flags into
// plain JSON, so that cluster worker processes receive exactly what the primary resolved.
import os from 'node:os'
import {z} from 'zod'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import {ServeSchema} from '../config/schema.js'
import type {ImageLimits} from '../data/image.js'
import type {EnginePreference} from '../engine/backend.js'
import {planThreads} from '../engine/inference.js'
import {parseModelRef} from '../model/repository.js'
import {resolveLocation} from '../storage/index.js'
import {UserError} from '../errors.js'
import type {TrafficSplit} from './split.js'

export type ServeConfig = z.output<typeof ServeSchema>

export interface ServedModel {
  name: string
  /** Version labels (TF Serving /labels/<label>) to version numbers. */
  labels: Record<string, number>
  /** Served as name@alias: only the version that alias points at (followed when it moves). */
  pin?: string
  /** Canary: requests naming no version are split between two versions (serve/split.ts). */
  split?: TrafficSplit
}

export interface ServeOptions {
  /** Absolute path of the model repository. */
  repository: string
  /** Models to serve; undefined = every model folder in the repository. */
  models?: ServedModel[]
  host: string
  port: number
  versionPolicy: 'all' | {latest: number}
  runtime: 'auto' | 'tfjs' | 'onnx'
  /** Worker threads per process. */
  instances: number
  /** ONNX Runtime intra-op threads per instance. */
  threads: number
  processes: number
  maxBatchSize: number
  preferredBatchSize: number
  maxQueueDelayMs: number
  maxQueueSize: number
  requestTimeoutMs: number
  maxBodyBytes: number
  /** Deepest JSON nesting accepted in a request body. */
  maxJsonDepth: number
  /** Bytes of request bodies admitted and not yet queued (read, parsed or decoded) at once. */
  maxInFlightBytes: number
  clientTimeoutMs: number
  pollIntervalMs: number
  /** How long the port keeps serving after a shutdown signal, with readiness already false. */
  shutdownDelayMs: number
  /** 'stdout', 'stderr', 'off' or an absolute file path. */
  accessLog: string
  auth?: {tokenEnv: string}
  tls?: {cert: string; key: string}
  /** The gRPC listener (KServe V2 and TF Serving PredictionService) on its own port; undefined: none. */
  grpc?: {port: number}
  /** TensorFlow.js backend preference (train.backend), initialised in every worker thread. */
  engine: EnginePreference
  imageLimits: ImageLimits
}

export interface ServeOverrides {
  port?: number
  host?: string
  repository?: string
  models?: string[]
  instances?: number
  threads?: number
  processes?: number
  shutdownDelayMs?: number
  grpcPort?: number
}

/** `name` or `name@alias` (serve only the version the alias points at). */
function servedModel(ref: string): ServedModel {
  const {name, alias, version} = parseModelRef(ref)
  if (version !== undefined) {
    throw new UserError(`--model ${ref}: serve a version through an alias (name@alias), or all versions by name`, {
      code: 'USAGE',
      exit: 'usage',
      suggestions: [`Point an alias at it: \`ml models alias ${version} <alias>\`, then serve ${name}@<alias>.`],
    })
  }
  return {name, labels: {}, ...(alias ? {pin: alias} : {})}
}

/** A model entry with its traffic split; a split of a model served as name@alias has nothing to split. */
function withSplit(model: ServedModel, split: TrafficSplit | undefined): ServedModel {
  if (split === undefined) return model
  if (model.pin !== undefined) {
    throw new UserError(`serve.models: ${model.name}@${model.pin} serves one version only, so it cannot have a split`, {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      suggestions: [`Serve it by name ("${model.name}") with split {stable: ${JSON.stringify(split.stable)}, canary: ${JSON.stringify(split.canary)}, percent: ${split.percent}}.`],
    })
  }
  return {...model, split}
}

/**
 * Turns a loaded config (or, with no config file, the serve defaults and a repository flag) into
 * ServeOptions. Paths in the config are relative to its folder; flag paths to the working directory.
 */
export function resolveServeOptions(loaded: LoadedConfig | undefined, overrides: ServeOverrides = {}): ServeOptions {
  let serve: ServeConfig
  if (loaded) serve = loaded.config.serve
  else {
    const parsed = ServeSchema.safeParse({})
    if (!parsed.success) throw new Error('serve defaults do not validate')
    serve = parsed.data
  }
  const base = loaded ?? {baseDir: process.cwd()}
  const repository = overrides.repository
    ? resolveLocation(overrides.repository)
    : serve.repository
      ? resolvePath(base, serve.repository)
      : loaded
        ? resolvePath(loaded, loaded.config.export.dir)
        : undefined
  if (repository === undefined) {
    throw new UserError('no model repository: pass --repository <dir> or --config <ml.yaml>', {code: 'SERVE_NO_REPOSITORY', exit: 'usage'})
  }
  let models: ServedModel[] | undefined = serve.models?.map((m) => (typeof m === 'string' ? servedModel(m) : withSplit({...servedModel(m.name), labels: m.labels ?? {}}, m.split)))
  if (overrides.models?.length) {
    models = overrides.models.map((ref) => {
      const wanted = servedModel(ref)
      const configured = models?.find((m) => m.name === wanted.name)
      if (configured === undefined) return wanted
      // name@alias serves that one version: no split.
      return wanted.pin ? {name: configured.name, labels: configured.labels, pin: wanted.pin} : configured
    })
  } else if (models === undefined && loaded) {
    // `ml serve --config x` serves what `ml export` wrote for that config.
    models = [{name: loaded.config.name, labels: {}}]
  }
  const processes = overrides.processes ?? serve.processes
  // instances x threads x processes fit the cores, each process's event loop keeping a core's share.
  const {instances, threads} = planThreads(os.availableParallelism(), processes, {instances: overrides.instances ?? serve.instances, threads: overrides.threads ?? serve.threads})
  const accessLog = ['stdout', 'stderr', 'off'].includes(serve.accessLog) ? serve.accessLog : resolvePath(base, serve.accessLog)
  return {
    repository,
    models,
    host: overrides.host ?? serve.host,
    port: overrides.port ?? serve.port,
    versionPolicy: serve.versionPolicy,
    runtime: serve.runtime,
    instances,
    threads,
    processes,
    maxBatchSize: serve.maxBatchSize,
    preferredBatchSize: Math.min(serve.preferredBatchSize ?? serve.maxBatchSize, serve.maxBatchSize),
    maxQueueDelayMs: serve.maxQueueDelayMs,
    maxQueueSize: serve.maxQueueSize,
    requestTimeoutMs: serve.requestTimeoutMs,
    maxBodyBytes: serve.maxBodyBytes,
    maxJsonDepth: serve.maxJsonDepth,
    maxInFlightBytes: serve.maxInFlightBytes,
    clientTimeoutMs: serve.clientTimeoutMs,
    pollIntervalMs: serve.pollIntervalMs,
    shutdownDelayMs: overrides.shutdownDelayMs ?? serve.shutdownDelayMs,
    accessLog,
    auth: serve.auth,
    grpc: overrides.grpcPort !== undefined ? {port: overrides.grpcPort} : serve.grpc,
    tls: serve.tls ? {cert: resolvePath(base, serve.tls.cert), key: resolvePath(base, serve.tls.key)} : undefined,
    engine: loaded?.config.train.backend ?? 'auto',
    imageLimits: loaded ? {maxPixels: loaded.config.data.maxPixels, maxFileBytes: loaded.config.data.maxFileBytes} : {maxPixels: 40_000_000, maxFileBytes: 50 * 1024 * 1024},
  }
}

/** ServeOptions for tests and benchmarks: defaults, then the given fields. */
export function serveOptions(fields: Partial<ServeOptions> & {repository: string}): ServeOptions {
  const defaults = resolveServeOptions(undefined, {repository: fields.repository})
  const merged = {...defaults, ...fields}
  if (fields.preferredBatchSize === undefined) merged.preferredBatchSize = merged.maxBatchSize
  return merged
}
