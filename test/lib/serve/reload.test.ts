import assert from 'node:assert/strict'
import {EventEmitter} from 'node:events'
import {cp, mkdir, rename, rm, writeFile} from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {serveOptions, type ServeOptions} from '../../../src/lib/serve/options.js'
import {preprocessImage, type Preprocessing} from '../../../src/lib/serve/predictor.js'
import type {ModelVersion} from '../../../src/lib/serve/repository.js'
import {startServer, type ServeHandle} from '../../../src/lib/serve/server.js'
import {readJson} from '../../../src/lib/storage/index.js'
import {tempDir} from '../../support/fixtures.js'
import {fp32Body, request, testDigits, trainServeModel, type ServeModel} from '../../support/serve-fixtures.js'

/** Requests in a loop on `concurrency` keep-alive connections until stop(); every outcome is kept. */
class Load extends EventEmitter {
  readonly outcomes: Array<{status: number; version?: string; error?: string}> = []
  private running = true
  private readonly agent = new http.Agent({keepAlive: true})
  private readonly loops: Array<Promise<void>>

  constructor(url: string, body: string, concurrency: number) {
    super()
    this.loops = Array.from({length: concurrency}, async () => {
      while (this.running) {
        const outcome = await request(url, {body, headers: {'Content-Type': 'application/json'}, agent: this.agent}).then(
          (r) => ({status: r.status, version: r.json?.model_version as string | undefined, error: r.json?.error as string | undefined}),
          (error: Error) => ({status: 0, error: error.message}),
        )
        this.outcomes.push(outcome)
        this.emit('outcome')
      }
    })
  }

  /** Resolves once `count` more responses came from `version`. */
  async servedBy(version: string, count: number): Promise<void> {
    let seen = 0
    const done = new Promise<void>((resolve) => {
      const check = () => {
        if (this.outcomes.at(-1)?.version === version && ++seen >= count) {
          this.off('outcome', check)
          resolve()
        }
      }
      this.on('outcome', check)
    })
    await done
  }

  async stop(): Promise<void> {
    this.running = false
    await Promise.all(this.loops)
    this.agent.destroy()
  }
}

function waitFor(server: ServeHandle, event: 'loaded' | 'failed' | 'unloaded', version: number, model = 'digits'): Promise<ModelVersion> {
  return new Promise((resolve) => {
    const check = (record: ModelVersion) => {
      if (record.version !== version || record.model !== model) return
      server.repository.off(event, check)
      resolve(record)
    }
    server.repository.on(event, check)
  })
}

describe('hot reload of model versions under load', () => {
  let cleanup: () => Promise<void>
  let model: ServeModel
  let all: ServeHandle
  let latest: ServeHandle
  let loads: Load[] = []
  let modelDir: string

  /** Adds a version the way `ml export` does: a staging folder renamed into place. */
  const addVersion = async (version: number, modelJson?: string) => {
    const staging = path.join(modelDir, `.staging-${version}`)
    await cp(model.versionDir, staging, {recursive: true})
    if (modelJson !== undefined) await writeFile(path.join(staging, 'model.json'), modelJson)
    await rename(staging, path.join(modelDir, String(version)))
  }

  before(async () => {
    const temp = await tempDir('ml-serve-reload-')
    cleanup = temp.cleanup
    model = await trainServeModel(temp.dir)
    modelDir = path.join(model.repository, 'digits')
    // TensorFlow.js: the versions below are broken and repaired through their model.json.
    const options = (fields: Partial<ServeOptions>) =>
      serveOptions({repository: model.repository, port: 0, instances: 2, maxBatchSize: 8, pollIntervalMs: 50, accessLog: 'off', engine: 'wasm', runtime: 'tfjs', ...fields})
    all = await startServer(options({}), {log: new JsonLog(undefined)})
    latest = await startServer(options({versionPolicy: {latest: 1}}), {log: new JsonLog(undefined)})
    const digit = (await testDigits(temp.dir, 1))[3]!
    const image = await preprocessImage(digit.png, await readJson<Preprocessing>(path.join(model.versionDir, 'preprocessing.json')), 'digit')
    const body = JSON.stringify(fp32Body([image]))
    loads = [new Load(`${all.url}/v2/models/digits/infer`, body, 3), new Load(`${latest.url}/v1/models/digits:predict`, JSON.stringify({instances: [Array.from(image)]}), 3)]
  })

  after(async () => {
    await Promise.all(loads.map((l) => l.stop()))
    await Promise.all([all?.close(), latest?.close()])
    await cleanup?.()
  })

  it('a new version is loaded, warmed up and swapped in without a failed request', async () => {
    await loads[0]!.servedBy('1', 10)
    const loadedAll = waitFor(all, 'loaded', 2)
    const loadedLatest = waitFor(latest, 'loaded', 2)
    const unloadedOld = waitFor(latest, 'unloaded', 1)
    await addVersion(2)
    await Promise.all([loadedAll, loadedLatest, unloadedOld])
    await loads[0]!.servedBy('2', 10)
    // TF Serving's predict response names no version: ask the status instead.
    assert.deepEqual((await request(`${latest.url}/v1/models/digits`)).json.model_version_status.map((s: {version: string}) => s.version), ['2'])
    assert.deepEqual((await request(`${all.url}/v2/models/digits`)).json.versions, ['1', '2'])
    // Explicit versions stay addressable under the default policy.
    assert.equal((await request(`${all.url}/v2/models/digits/versions/1/infer`, {body: {inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', data: Array(784).fill(0)}]}})).json.model_version, '1')
  })

  it('a broken version is rejected with its reason and the previous one keeps serving', async () => {
    const failedAll = waitFor(all, 'failed', 3)
    const failedLatest = waitFor(latest, 'failed', 3)
    await addVersion(3, '{"format": "layers-model", "modelTopology": ')
    const record = await failedAll
    await failedLatest
    assert.match(record.reason!, /JSON/)
    await loads[0]!.servedBy('2', 10)
    const status = (await request(`${all.url}/v1/models/digits`)).json.model_version_status
    assert.deepEqual(status.map((s: {version: string; state: string}) => `${s.version}:${s.state}`), ['3:END', '2:AVAILABLE', '1:AVAILABLE'])
    assert.equal(status[0].status.error_code, 'UNKNOWN')
    assert.match(status[0].status.error_message, /JSON/)
    assert.equal((await request(`${all.url}/v2/models/digits/versions/3/ready`)).status, 400)
    const index = (await request(`${all.url}/v2/repository/index`, {method: 'POST', body: {}})).json
    assert.equal(index.find((v: {version: string}) => v.version === '3').state, 'UNAVAILABLE')
    assert.deepEqual((await request(`${latest.url}/v1/models/digits`)).json.model_version_status.map((s: {version: string; state: string}) => `${s.version}:${s.state}`), ['3:END', '2:AVAILABLE'])
  })

  it('a repaired version is retried and swapped in; a removed one is unloaded', async () => {
    const loadedAll = waitFor(all, 'loaded', 3)
    const loadedLatest = waitFor(latest, 'loaded', 3)
    const unloaded2 = waitFor(latest, 'unloaded', 2)
    await cp(path.join(model.versionDir, 'model.json'), path.join(modelDir, '3', 'model.json'))
    await Promise.all([loadedAll, loadedLatest, unloaded2])
    await loads[0]!.servedBy('3', 10)
    const unloaded1 = waitFor(all, 'unloaded', 1)
    await rm(path.join(modelDir, '1'), {recursive: true})
    await unloaded1
    assert.equal((await request(`${all.url}/v2/models/digits/versions/1`)).status, 404)
    await loads[0]!.servedBy('3', 5)
    await Promise.all(loads.map((l) => l.stop()))
    for (const load of loads) {
      const failed = load.outcomes.filter((o) => o.status !== 200)
      assert.deepEqual(failed, [], 'no request failed during the reloads')
      assert.ok(load.outcomes.length > 50, `only ${load.outcomes.length} requests`)
    }
    assert.deepEqual([...new Set(loads[0]!.outcomes.map((o) => o.version))], ['1', '2', '3'])
  })

  it('a new model folder is discovered and served beside the first; a removed one disappears', async () => {
    const otherDir = path.join(model.repository, 'other')
    await mkdir(otherDir)
    const loaded = waitFor(all, 'loaded', 1, 'other')
    await cp(path.join(modelDir, '3'), path.join(otherDir, '.staging-1'), {recursive: true})
    await rename(path.join(otherDir, '.staging-1'), path.join(otherDir, '1'))
    await loaded
    const body = {inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', data: Array(784).fill(0)}]}
    const other = await request(`${all.url}/v2/models/other/infer`, {body})
    assert.equal(other.status, 200, other.text)
    assert.equal(other.json.model_name, 'other')
    assert.equal((await request(`${all.url}/v2/models/digits/infer`, {body})).json.model_version, '3')
    assert.deepEqual((await request(`${all.url}/v2/repository/index`, {method: 'POST', body: {}})).json.map((v: {name: string; version: string}) => `${v.name}/${v.version}`), ['digits/2', 'digits/3', 'other/1'])
    const unloaded = waitFor(all, 'unloaded', 1, 'other')
    await rm(otherDir, {recursive: true})
    await unloaded
    assert.match((await request(`${all.url}/v2/models/other/infer`, {body})).json.error, /unknown model "other"/)
  })
})
