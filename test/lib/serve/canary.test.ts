import assert from 'node:assert/strict'
import {cp, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {ServeSchema} from '../../../src/lib/config/schema.js'
import {setAlias} from '../../../src/lib/model/repository.js'
import {parseExposition, select} from '../../../src/lib/monitor/prom-text.js'
import {SERVE} from '../../../src/lib/metric-names.js'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {resolveServeOptions, serveOptions, type ServeOptions} from '../../../src/lib/serve/options.js'
import {preprocessImage, type Preprocessing} from '../../../src/lib/serve/predictor.js'
import {startServer, type ServeHandle} from '../../../src/lib/serve/server.js'
import {fnv1a, Splitter} from '../../../src/lib/serve/split.js'
import {readJson} from '../../../src/lib/storage/index.js'
import {tempDir} from '../../support/fixtures.js'
import {captureLog, fp32Body, request, testDigits, trainServeModel, type ServeModel} from '../../support/serve-fixtures.js'

describe('Splitter', () => {
  it('sends exactly the percentage by count, spread evenly', () => {
    for (const percent of [0, 1, 10, 25, 33.33, 50, 90, 100]) {
      const splitter = new Splitter(percent)
      const roles = Array.from({length: 10_000}, () => splitter.next())
      assert.equal(roles.filter((r) => r === 'canary').length, Math.round(percent * 100), `${percent}%`)
    }
    const ten = new Splitter(10)
    const first = Array.from({length: 30}, () => ten.next())
    assert.deepEqual(first.flatMap((r, i) => (r === 'canary' ? [i + 1] : [])), [10, 20, 30])
  })

  it('keeps a sticky key on one version, and splits keys near the percentage', () => {
    const splitter = new Splitter(20)
    for (const key of ['alice', 'bob', 'carol']) {
      const role = splitter.next(key)
      for (let i = 0; i < 20; i++) assert.equal(splitter.next(key), role)
      assert.equal(role, fnv1a(key) % 10_000 < 2000 ? 'canary' : 'stable')
    }
    const canaries = Array.from({length: 5000}, (_, i) => splitter.next(`user-${i}`)).filter((r) => r === 'canary').length
    assert.ok(canaries > 850 && canaries < 1150, `${canaries} of 5000 keys on the canary`)
    // FNV-1a's published test vector.
    assert.equal(fnv1a('a'), 0xe40c292c)
  })
})

describe('serve.models[].split in the config', () => {
  const parse = (models: unknown[]) => ServeSchema.safeParse({repository: 'models', models})
  /** A loaded config with this serve section, as resolveServeOptions reads it. */
  const loaded = (serve: unknown) =>
    ({config: {name: 'digits', serve, train: {backend: 'wasm'}, data: {maxPixels: 1000, maxFileBytes: 1000}, export: {dir: 'models'}}, baseDir: '/tmp', file: '/tmp/ml.yaml'}) as unknown as Parameters<typeof resolveServeOptions>[0]

  it('takes versions or aliases, defaulting to production and canary', () => {
    const parsed = parse([{name: 'digits', split: {percent: 10}}])
    assert.ok(parsed.success, parsed.error?.message)
    assert.deepEqual(resolveServeOptions(loaded(parsed.data)).models![0]!.split, {stable: 'production', canary: 'canary', percent: 10})
    assert.ok(parse([{name: 'digits', split: {stable: 3, canary: 4, percent: 12.5, stickyHeader: 'x-user-id'}}]).success)
  })

  it('refuses a percentage out of range, a bad version or header name, and a split of name@alias', () => {
    assert.equal(parse([{name: 'digits', split: {percent: 120}}]).success, false)
    assert.equal(parse([{name: 'digits', split: {stable: 0, percent: 10}}]).success, false)
    assert.equal(parse([{name: 'digits', split: {canary: '4b/', percent: 10}}]).success, false)
    assert.equal(parse([{name: 'digits', split: {percent: 10, stickyHeader: 'x user'}}]).success, false)
    assert.equal(parse([{name: 'digits', split: {stable: 3}}]).success, false, 'percent is required')
    const pinned = parse([{name: 'digits@production', split: {percent: 10}}])
    assert.ok(pinned.success)
    assert.throws(() => resolveServeOptions(loaded(pinned.data)), /digits@production serves one version only, so it cannot have a split/)
  })
})

describe('canary traffic split in ml serve', () => {
  let cleanup: () => Promise<void>
  let model: ServeModel
  let server: ServeHandle
  let aliased: ServeHandle
  let body: object
  const log = captureLog()

  const options = (fields: Partial<ServeOptions>) =>
    serveOptions({repository: model.repository, port: 0, instances: 1, maxBatchSize: 8, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm', runtime: 'tfjs', ...fields})

  /** model_version of `n` KServe V2 requests sent one after another. */
  const versions = async (url: string, n: number, headers: Record<string, string> = {}) => {
    const out: string[] = []
    for (let i = 0; i < n; i++) {
      const r = await request(`${url}/v2/models/digits/infer`, {body, headers})
      assert.equal(r.status, 200, r.text)
      assert.equal(r.headers['x-model-version'], r.json.model_version)
      out.push(r.json.model_version as string)
    }
    return out
  }

  before(async () => {
    const temp = await tempDir('ml-serve-canary-')
    cleanup = temp.cleanup
    model = await trainServeModel(temp.dir)
    for (const v of ['2', '3']) await cp(model.versionDir, path.join(model.repository, 'digits', v), {recursive: true})
    const digit = (await testDigits(temp.dir, 1))[7]!
    body = fp32Body([await preprocessImage(digit.png, await readJson<Preprocessing>(path.join(model.versionDir, 'preprocessing.json')), 'digit')])
    server = await startServer(options({models: [{name: 'digits', labels: {}, split: {stable: 1, canary: 2, percent: 25}}]}), {log: new JsonLog(undefined)})
    await setAlias(model.repository, 'digits', 'production', 1)
    await setAlias(model.repository, 'digits', 'canary', 3)
    aliased = await startServer(options({models: [{name: 'digits', labels: {}, split: {stable: 'production', canary: 'canary', percent: 50, stickyHeader: 'X-User'}}]}), {log: log.log})
  })

  after(async () => {
    await Promise.all([server?.close(), aliased?.close()])
    await cleanup?.()
  })

  it('sends the configured share of requests without a version to the canary, and reports the version', async () => {
    const answered = await versions(server.url, 20)
    assert.deepEqual(answered.flatMap((v, i) => (v === '2' ? [i + 1] : [])), [4, 8, 12, 16, 20])
    assert.ok(answered.every((v) => v === '1' || v === '2'))
    // A request naming a version or label is not split; metadata names the stable version.
    const named = await request(`${server.url}/v2/models/digits/versions/3/infer`, {body})
    assert.equal(named.json.model_version, '3')
    assert.equal((await request(`${server.url}/v1/models/digits/metadata`)).json.model_spec.version, '1')
    // TF Serving's predict answer has no version field: the header tells.
    const predict = await request(`${server.url}/v1/models/digits:predict`, {body: {instances: [Array(784).fill(0)]}})
    assert.equal(predict.status, 200, predict.text)
    assert.match(predict.headers['x-model-version'] as string, /^[12]$/)
  })

  it('counts requests and latency per version, and exports the split', async () => {
    const expo = parseExposition(await server.metrics.registry.metrics())
    const count = (version: string) => select(expo, SERVE.requests, {model: 'digits', version, protocol: 'kserve', status: '200'}).reduce((a, s) => a + s.value, 0)
    assert.equal(count('1'), 15)
    assert.equal(count('2'), 5)
    assert.equal(select(expo, `${SERVE.requestDuration}_count`, {model: 'digits', version: '2', protocol: 'kserve'})[0]?.value, 5)
    const split = select(expo, SERVE.trafficSplit).map((s) => `${s.labels.version}:${s.labels.role}:${s.value}`).sort()
    assert.deepEqual(split, ['1:stable:75', '2:canary:25'])
  })

  it('follows aliases as they move, and keeps a sticky caller on one version', async () => {
    const alice = await versions(aliased.url, 6, {'X-User': 'alice'})
    const bob = await versions(aliased.url, 6, {'x-user': 'bob'})
    assert.equal(new Set(alice).size, 1)
    assert.equal(new Set(bob).size, 1)
    assert.equal(alice[0], fnv1a('alice') % 10_000 < 5000 ? '3' : '1')
    assert.equal(bob[0], fnv1a('bob') % 10_000 < 5000 ? '3' : '1')
    assert.deepEqual(await versions(aliased.url, 4), ['1', '3', '1', '3'])
    // Promotion: production moves to the canary's version; the split has one version left.
    await setAlias(model.repository, 'digits', 'production', 3)
    await aliased.repository.scan()
    assert.deepEqual(await versions(aliased.url, 4), ['3', '3', '3', '3'])
    const split = select(parseExposition(await aliased.metrics.registry.metrics()), SERVE.trafficSplit).map((s) => `${s.labels.version}:${s.labels.role}:${s.value}`)
    assert.deepEqual(split, ['3:stable:100'])
    // A new canary: version 2.
    await setAlias(model.repository, 'digits', 'canary', 2)
    await aliased.repository.scan()
    assert.deepEqual(await versions(aliased.url, 4), ['3', '2', '3', '2'])
  })

  it("re-reads the model folder's split.json on every scan: a ramp, a bad file kept out, the config's split back", async () => {
    const file = path.join(model.repository, 'digits', 'split.json')
    const splitOf = async () => select(parseExposition(await aliased.metrics.registry.metrics()), SERVE.trafficSplit).map((s) => `${s.labels.version}:${s.labels.role}:${s.value}`).sort()
    await writeFile(file, JSON.stringify({percent: 100}))
    await aliased.repository.scan()
    assert.deepEqual(await versions(aliased.url, 3), ['2', '2', '2'])
    assert.deepEqual(await splitOf(), ['2:canary:100', '3:stable:0'])
    await writeFile(file, JSON.stringify({stable: 1, canary: 'canary', percent: 0}))
    await aliased.repository.scan()
    assert.deepEqual(await versions(aliased.url, 3), ['1', '1', '1'])
    // A broken file changes nothing and is logged once.
    await writeFile(file, JSON.stringify({percent: 'half'}))
    await aliased.repository.scan()
    await aliased.repository.scan()
    assert.deepEqual(await versions(aliased.url, 2), ['1', '1'])
    assert.equal(log.events.filter((e) => e.event === 'split-invalid').length, 1)
    assert.match(String(log.events.find((e) => e.event === 'split-invalid')!.reason), /percent/)
    await rm(file)
    await aliased.repository.scan()
    assert.deepEqual(await versions(aliased.url, 4), ['3', '2', '3', '2'])
    assert.deepEqual(await splitOf(), ['2:canary:50', '3:stable:50'])
    assert.deepEqual(log.events.filter((e) => e.event === 'split-changed').map((e) => (e.split as {percent: number} | null)?.percent), [100, 0, 50])
  })
})
