// fake-gcs-server (github.com/fsouza/fake-gcs-server, built by scripts/peers/fake-gcs.sh): an
// independent Cloud Storage emulator, started on a loopback port with an in-memory backend.
import {spawn, type ChildProcess} from 'node:child_process'
import {once} from 'node:events'
import path from 'node:path'
import {createInterface} from 'node:readline'
import {CACHE, freePort, peerSkip} from './peers.js'

export const FAKE_GCS_VERSION = 'v1.52.2'
export const FAKE_GCS_BIN = path.join(CACHE, `fake-gcs-server-${FAKE_GCS_VERSION}`, 'fake-gcs-server')
/** Why the fake-gcs-server tests cannot run here, or undefined (throws under CI=true). */
export const fakeGcsSkip = (): string | undefined => peerSkip('fake-gcs-server', FAKE_GCS_BIN, 'fake-gcs.sh')

export class FakeGcs {
  private constructor(
    private readonly child: ChildProcess,
    /** http://127.0.0.1:<port>, for ML_GCS_ENDPOINT. */
    readonly url: string,
    readonly log: string[],
  ) {}

  /** Starts the emulator and creates `buckets` through its JSON API. */
  static async start(buckets: string[]): Promise<FakeGcs> {
    const port = await freePort()
    const url = `http://127.0.0.1:${port}`
    const child = spawn(FAKE_GCS_BIN, ['-scheme', 'http', '-host', '127.0.0.1', '-port', String(port), '-backend', 'memory', '-public-host', `127.0.0.1:${port}`, '-external-url', url], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const log: string[] = []
    // It says where it listens once the listener is open.
    await new Promise<void>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`fake-gcs-server exited while starting (${code}):\n${log.join('\n')}`))
      child.once('exit', onExit)
      child.once('error', reject)
      for (const stream of [child.stdout!, child.stderr!]) {
        createInterface({input: stream}).on('line', (line) => {
          log.push(line)
          if (log.length > 200) log.shift()
          if (line.includes('server started at')) {
            child.off('exit', onExit)
            resolve()
          }
        })
      }
    })
    const gcs = new FakeGcs(child, url, log)
    for (const name of buckets) {
      const response = await fetch(`${url}/storage/v1/b?project=ml-peers`, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({name})})
      if (!response.ok) throw new Error(`creating bucket ${name}: ${response.status} ${await response.text()}`)
    }
    return gcs
  }

  /** Every object name in `bucket` under `prefix`, sorted, as the emulator lists them. */
  async names(bucket: string, prefix = ''): Promise<string[]> {
    const out: string[] = []
    let pageToken = ''
    do {
      const query = new URLSearchParams({prefix, ...(pageToken ? {pageToken} : {})})
      const body = (await (await fetch(`${this.url}/storage/v1/b/${bucket}/o?${query}`)).json()) as {items?: Array<{name: string}>; nextPageToken?: string}
      out.push(...(body.items ?? []).map((i) => i.name))
      pageToken = body.nextPageToken ?? ''
    } while (pageToken)
    return out.sort()
  }

  /** An object's bytes, or undefined when it does not exist. */
  async get(bucket: string, name: string): Promise<Buffer | undefined> {
    const response = await fetch(`${this.url}/storage/v1/b/${bucket}/o/${encodeURIComponent(name)}?alt=media`)
    if (response.status === 404) return undefined
    if (!response.ok) throw new Error(`GET ${name}: ${response.status}`)
    return Buffer.from(await response.arrayBuffer())
  }

  /** Uploads an object straight through the emulator's upload API (not through ml's storage layer). */
  async put(bucket: string, name: string, data: Buffer | string, contentType = 'application/octet-stream'): Promise<void> {
    const response = await fetch(`${this.url}/upload/storage/v1/b/${bucket}/o?uploadType=media&name=${encodeURIComponent(name)}`, {method: 'POST', headers: {'content-type': contentType}, body: data})
    if (!response.ok) throw new Error(`upload ${name}: ${response.status} ${await response.text()}`)
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const exited = once(this.child, 'exit')
    this.child.kill('SIGTERM')
    await exited
  }
}
