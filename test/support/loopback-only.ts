// Loaded by the Google Cloud tests and by the ml processes they start (NODE_OPTIONS=--import): refuses,
// and records in $ML_TEST_NETLOG, every connection or DNS lookup for a host other than this machine.
import dns from 'node:dns'
import {appendFileSync} from 'node:fs'
import net from 'node:net'
import {fileURLToPath} from 'node:url'

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost', '::ffff:127.0.0.1'])

/** This module's path, for NODE_OPTIONS=--import in child processes. */
export const LOOPBACK_ONLY = fileURLToPath(import.meta.url)

function record(what: string): void {
  const log = process.env.ML_TEST_NETLOG
  if (log) appendFileSync(log, `${process.pid} ${what}\n`)
}

const blocked = (host: string) => Object.assign(new Error(`blocked in tests: ${host} is not this machine`), {code: 'ECONNREFUSED'})

type ConnectArgs = Parameters<net.Socket['connect']>
const connect = net.Socket.prototype.connect
net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
  // net.connect() passes its normalised [options, listener] as one array argument.
  const first = Array.isArray(args[0]) ? args[0][0] : args[0]
  const options = (typeof first === 'object' && first !== null ? first : {port: first, host: typeof args[1] === 'string' ? args[1] : undefined}) as {
    host?: string
    port?: number
    path?: string
  }
  if (!options.path && options.host !== undefined && !LOOPBACK.has(options.host)) {
    record(`connect ${options.host}:${options.port}`)
    process.nextTick(() => this.destroy(blocked(options.host!)))
    return this
  }
  return connect.apply(this, args as ConnectArgs)
} as typeof connect

const lookup = dns.lookup
dns.lookup = function (hostname: string, ...rest: unknown[]) {
  if (!LOOPBACK.has(hostname)) {
    record(`lookup ${hostname}`)
    const callback = rest.at(-1) as (error: Error) => void
    process.nextTick(() => callback(blocked(hostname)))
    return undefined as unknown as ReturnType<typeof dns.lookup>
  }
  return (lookup as (...a: unknown[]) => unknown).call(dns, hostname, ...rest)
} as typeof dns.lookup

const promisesLookup = dns.promises.lookup
dns.promises.lookup = async function (hostname: string, ...rest: unknown[]) {
  if (!LOOPBACK.has(hostname)) {
    record(`lookup ${hostname}`)
    throw blocked(hostname)
  }
  return (promisesLookup as (...a: unknown[]) => Promise<unknown>).call(dns.promises, hostname, ...rest)
} as typeof dns.promises.lookup
