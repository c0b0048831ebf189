// Where the peers live (installed by scripts/peers/*.sh into a cache outside git) and what a test does
// when one is missing: under CI=true that is a failure, elsewhere the test is skipped and says why.
import {createHash} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import {ROOT} from '../../support/cli.js'

export {ROOT}
export const SCRIPTS = path.join(ROOT, 'scripts', 'peers')
export const CACHE = process.env.ML_PEERS_CACHE ?? path.join(os.homedir(), '.cache', 'ml-peers')

/** The folder name suffix the setup scripts give a peer: `stamp_of` in scripts/peers/common.sh. */
export function stampOf(...files: string[]): string {
  const hash = createHash('sha256')
  for (const file of files) hash.update(readFileSync(path.join(SCRIPTS, file)))
  return hash.digest('hex').slice(0, 12)
}

/**
 * `undefined` when `file` exists; otherwise the reason to skip, or (under CI=true, where a missing
 * peer must not pass silently) an exception naming the setup script.
 */
export function peerSkip(name: string, file: string, script: string): string | undefined {
  if (existsSync(file)) return undefined
  const why = `${name} is not installed (${file} is missing): run scripts/peers/${script} or npm run test:peers`
  if (process.env.CI === 'true') throw new Error(why)
  return why
}

/** A port free on 127.0.0.1 right now, for servers that must be told their port up front (Kafka advertises it). */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}
