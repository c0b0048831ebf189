// `ml serve` end to end: one server process, or a node:cluster primary (no inference of its own) that
// runs serve.processes servers on one port, replaces dead ones, aggregates metrics and drains on SIGTERM.
import cluster, {type Worker} from 'node:cluster'
import {once} from 'node:events'
import {fileURLToPath} from 'node:url'
import {AggregatorRegistry, Counter, Registry} from 'prom-client'
import {TFJS_NOT_STARTED} from '../engine/inference.js'
import {ExitCode, UserError, type ExitCodeName} from '../errors.js'
import {SERVE} from '../metric-names.js'
import {JsonLog} from './log.js'
import type {ServeOptions} from './options.js'
import {startServer, type ServeHandle} from './server.js'

export interface ListeningInfo {
  url: string
  port: number
  /** The gRPC port, when serve.grpc is on. */
  grpcPort?: number
  processes: number
  instances: number
  models: Array<{name: string; versions: number[]}>
}

export interface ServeSummary {
  url: string
  port: number
  /** The gRPC port, when serve.grpc is on. */
  grpcPort?: number
  processes: number
  instances: number
  /** Requests received, by every process (one killed by a signal cannot report its own). */
  requests: number
  /** Server processes replaced after they died (always 0 for one process). */
  restarts: number
  signal: string
  uptimeSeconds: number
}

export interface ServeHooks {
  onListening?(info: ListeningInfo): void
}

/** IPC between the primary and its server processes. */
export type ClusterMessage =
  | {type: 'ml:listening'; port: number; url: string; models: ListeningInfo['models']; grpcPort?: number}
  | {type: 'ml:fatal'; error: {code: string; message: string; exitCode: number; suggestions?: string[]}}
  | {type: 'ml:metrics-request'; id: number}
  | {type: 'ml:metrics'; id: number; text: string}
  /** skipDelay: drain now, ending a shutdown delay under way. */
  | {type: 'ml:shutdown'; skipDelay: boolean}
  /** A server process drained: what it received, for the primary's summary. */
  | {type: 'ml:stopped'; requests: number}

export const OPTIONS_ENV = 'ML_SERVE_OPTIONS'

export function servedModels(handle: ServeHandle): ListeningInfo['models'] {
  return [...handle.repository.models.values()].map((m) => ({
    name: m.name,
    versions: [...m.versions.values()].filter((v) => v.state === 'AVAILABLE').map((v) => v.version).sort((a, b) => a - b),
  }))
}

/**
 * Resolves with the first SIGTERM or SIGINT. A second one within the shutdown delay calls skipDelay:
 * whoever sends it wants the process gone, but not at the price of the requests it holds, so the
 * drain starts at once. One during the drain exits at once (130).
 */
function nextSignal(log: JsonLog, delayMs: number, skipDelay: () => void): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const first = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', first)
      process.off('SIGINT', first)
      const delayEnds = performance.now() + delayMs
      let skipped = false
      const again = (second: NodeJS.Signals) => {
        if (!skipped && performance.now() < delayEnds) {
          skipped = true
          log.event('info', 'shutdown-delay-skipped', {signal: second})
          skipDelay()
          return
        }
        log.event('warn', 'forced-exit', {signal: second})
        process.exit(ExitCode.interrupted)
      }
      process.on('SIGTERM', again)
      process.on('SIGINT', again)
      resolve(signal)
    }
    process.on('SIGTERM', first)
    process.on('SIGINT', first)
  })
}

export async function runServe(options: ServeOptions, hooks: ServeHooks = {}): Promise<ServeSummary> {
  return options.processes > 1 ? runCluster(options, hooks) : runSingle(options, hooks)
}

async function runSingle(options: ServeOptions, hooks: ServeHooks): Promise<ServeSummary> {
  const started = Date.now()
  const log = new JsonLog(process.stderr)
  const handle = await startServer(options, {log})
  const models = servedModels(handle)
  // Handled before `listening` is announced: whoever reads it may signal at once.
  const signalled = nextSignal(log, options.shutdownDelayMs, () => void handle.shutdown({skipDelay: true}))
  const grpcPort = handle.grpcPort === undefined ? {} : {grpcPort: handle.grpcPort}
  log.event('info', 'listening', {url: handle.url, port: handle.port, ...grpcPort, pid: process.pid, instances: options.instances, backend: handle.pool.backend || TFJS_NOT_STARTED, models})
  hooks.onListening?.({url: handle.url, port: handle.port, ...grpcPort, processes: 1, instances: options.instances, models})
  const signal = await signalled
  log.event('info', 'signal', {signal})
  await handle.shutdown()
  return {url: handle.url, port: handle.port, ...grpcPort, processes: 1, instances: options.instances, requests: handle.handled(), restarts: 0, signal, uptimeSeconds: Math.round((Date.now() - started) / 1000)}
}

function exitName(code: number): ExitCodeName {
  return (Object.entries(ExitCode).find(([, value]) => value === code)?.[0] ?? 'internal') as ExitCodeName
}

async function runCluster(options: ServeOptions, hooks: ServeHooks): Promise<ServeSummary> {
  const started = Date.now()
  const log = new JsonLog(process.stderr, {pid: process.pid, role: 'primary'})
  const aggregator = new AggregatorRegistry()
  const own = new Registry()
  const restartsCounter = new Counter({name: SERVE.processRestarts, help: 'Server processes replaced after they died.', registers: [own]})
  // Every process accepts from the one shared listening socket, rather than the primary accepting and
  // handing each connection over IPC (round robin): a process killed with SIGKILL mid-handover left that
  // connection open in the primary, unanswered for ever. Connections it never accepted wait in the
  // socket's queue for the others; the ones it had accepted are closed by the kernel.
  cluster.schedulingPolicy = cluster.SCHED_NONE
  cluster.setupPrimary({exec: fileURLToPath(new URL('./process-worker.js', import.meta.url)), args: []})
  const env = {[OPTIONS_ENV]: JSON.stringify(options)}
  let stopping = false
  let restarts = 0
  let requests = 0
  let listening: {port: number; url: string; models: ListeningInfo['models']; grpcPort?: number} | undefined
  const recentDeaths: number[] = []
  const restartTimers = new Set<NodeJS.Timeout>()

  const fork = () => cluster.fork(env)

  const startup = new Promise<void>((resolve, reject) => {
    let up = 0
    cluster.on('message', (worker: Worker, message: ClusterMessage) => {
      if (message.type === 'ml:listening') {
        // A replacement that was still loading when the shutdown came may not have heard it (a message
        // sent before its listener exists is lost): it is told again now that it listens.
        if (stopping) worker.send({type: 'ml:shutdown', skipDelay: true} satisfies ClusterMessage)
        listening ??= message
        log.event('info', 'process-started', {worker: worker.id, workerPid: worker.process.pid, port: message.port})
        if (++up === options.processes) resolve()
      } else if (message.type === 'ml:fatal' && listening === undefined) {
        reject(new UserError(message.error.message, {code: message.error.code, exit: exitName(message.error.exitCode), suggestions: message.error.suggestions}))
      } else if (message.type === 'ml:stopped') {
        requests += message.requests
      } else if (message.type === 'ml:metrics-request') {
        // Every process's registry summed (histograms and counters) or averaged per prom-client's rules.
        Promise.all([aggregator.clusterMetrics(), own.metrics()])
          .then(([text, mine]) => worker.send({type: 'ml:metrics', id: message.id, text: text + mine} satisfies ClusterMessage))
          .catch((error: Error) => worker.send({type: 'ml:metrics', id: message.id, text: `# metrics aggregation failed: ${error.message}\n`} satisfies ClusterMessage))
      }
    })
    cluster.on('exit', (worker, code, signal) => {
      // Ctrl-C reaches the whole process group, but the primary's handler sets stopping long before a
      // worker has drained, so any other exit is a process to replace.
      if (stopping) return
      if (listening === undefined) {
        reject(new Error(`server process ${worker.process.pid} exited (code ${code}, signal ${signal}) before it listened`))
        return
      }
      const now = Date.now()
      recentDeaths.push(now)
      while (recentDeaths.length > 0 && recentDeaths[0]! < now - 60_000) recentDeaths.shift()
      restarts++
      restartsCounter.inc()
      // A process that keeps dying right after start is replaced more and more slowly.
      const delay = recentDeaths.length > 3 ? Math.min(30_000, 250 * 2 ** (recentDeaths.length - 3)) : 0
      log.event('error', 'process-died', {workerPid: worker.process.pid, code, signal, restartInMs: delay})
      const timer = setTimeout(() => {
        restartTimers.delete(timer)
        if (!stopping) fork()
      }, delay)
      restartTimers.add(timer)
    })
  })

  const workers = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
  // Each process applies the shutdown delay and drains on its own; they are waited for, never killed.
  const stopAll = async (skipDelay: boolean) => {
    stopping = true
    // A pending replacement (backed off up to 30 s) would hold the primary alive after the drain.
    for (const timer of restartTimers) clearTimeout(timer)
    restartTimers.clear()
    await Promise.all(workers().map((worker) => new Promise<void>((resolve) => {
      if (worker.isDead()) {
        resolve()
        return
      }
      // Its channel closes after its last message (its request count) has been read; its exit may come first.
      const channelClosed = worker.isConnected() ? once(worker, 'disconnect') : Promise.resolve()
      worker.once('exit', () => void channelClosed.then(() => resolve()))
      if (worker.isConnected()) worker.send({type: 'ml:shutdown', skipDelay} satisfies ClusterMessage)
      else worker.process.kill('SIGTERM')
    })))
  }

  for (let i = 0; i < options.processes; i++) fork()
  try {
    await startup
  } catch (error) {
    // Not yet behind any load balancer: nothing to wait for.
    await stopAll(true)
    throw error
  }
  const info = {url: listening!.url, port: listening!.port, ...(listening!.grpcPort === undefined ? {} : {grpcPort: listening!.grpcPort}), processes: options.processes, instances: options.instances, models: listening!.models}
  // Handled before `listening` is announced: whoever reads it may signal at once.
  const signalled = nextSignal(log, options.shutdownDelayMs, () => {
    for (const worker of workers()) if (worker.isConnected()) worker.send({type: 'ml:shutdown', skipDelay: true} satisfies ClusterMessage)
  })
  log.event('info', 'listening', info)
  hooks.onListening?.(info)
  const signal = await signalled
  log.event('info', 'signal', {signal})
  await stopAll(false)
  cluster.removeAllListeners('message')
  cluster.removeAllListeners('exit')
  log.event('info', 'stopped', {restarts})
  return {url: info.url, port: info.port, ...(info.grpcPort === undefined ? {} : {grpcPort: info.grpcPort}), processes: options.processes, instances: options.instances, requests, restarts, signal, uptimeSeconds: Math.round((Date.now() - started) / 1000)}
}
