import assert from 'node:assert/strict'
import {cp, mkdir, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {UserError} from '../../../src/lib/errors.js'
import {listRegistry, registryTable} from '../../../src/lib/model/registry.js'
import {
  aliasStack,
  parseModelRef,
  readAliases,
  removeAlias,
  resolveLabel,
  resolveModelRef,
  rollbackAlias,
  setAlias,
  versionsToServe,
} from '../../../src/lib/model/repository.js'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {serveOptions} from '../../../src/lib/serve/options.js'
import {startServer, type ServeHandle} from '../../../src/lib/serve/server.js'
import {runJson} from '../../support/cli.js'
import {tempDir} from '../../support/fixtures.js'
import {request, trainServeModel, type ServeModel} from '../../support/serve-fixtures.js'

/** A repository of empty version folders with model cards (enough for the registry's bookkeeping). */
async function fakeRepository(dir: string, versions: Record<number, {accuracy?: number; formats?: string[]} | 'bare'>): Promise<string> {
  const repo = path.join(dir, 'models')
  for (const [version, card] of Object.entries(versions)) {
    const folder = path.join(repo, 'digits', version)
    await mkdir(folder, {recursive: true})
    if (card === 'bare') await writeFile(path.join(folder, 'model.onnx'), '')
    else {
      await writeFile(
        path.join(folder, 'model-card.json'),
        JSON.stringify({runId: `run-${version}`, dataset: {version: 2}, evaluation: {accuracy: card.accuracy ?? null, datasetVersion: 2}, formats: (card.formats ?? ['tfjs']).map((format) => ({format}))}),
      )
    }
  }
  return repo
}

describe('model registry: aliases', () => {
  let dir: string
  let cleanup: () => Promise<void>
  before(async () => ({dir, cleanup} = await tempDir('ml-registry-')))
  after(() => cleanup())

  it('sets, moves and rolls back aliases, further back each time, recording every move', async () => {
    const repo = await fakeRepository(path.join(dir, 'a'), {1: {}, 2: {}, 3: {}})
    assert.deepEqual(await readAliases(repo, 'digits'), {aliases: {}, history: []})
    await setAlias(repo, 'digits', 'production', 1)
    await setAlias(repo, 'digits', 'production', 2)
    await setAlias(repo, 'digits', 'staging', 3)
    const third = await setAlias(repo, 'digits', 'production', 3)
    assert.deepEqual(third.move, {...third.move, alias: 'production', version: 3, previous: 2, action: 'set'})
    assert.deepEqual((await readAliases(repo, 'digits')).aliases, {production: 3, staging: 3})
    assert.equal((await rollbackAlias(repo, 'digits', 'production')).move.version, 2)
    assert.equal((await rollbackAlias(repo, 'digits', 'production')).move.version, 1)
    await assert.rejects(rollbackAlias(repo, 'digits', 'production'), (e: unknown) => e instanceof UserError && e.code === 'NOTHING_TO_ROLL_BACK')
    const file = await readAliases(repo, 'digits')
    assert.deepEqual(file.aliases, {production: 1, staging: 3})
    assert.deepEqual(file.history.map((m) => `${m.action}:${m.alias}:${m.previous}->${m.version}`), [
      'set:production:null->1',
      'set:production:1->2',
      'set:staging:null->3',
      'set:production:2->3',
      'rollback:production:3->2',
      'rollback:production:2->1',
    ])
    await removeAlias(repo, 'digits', 'staging')
    assert.deepEqual((await readAliases(repo, 'digits')).aliases, {production: 1})
  })

  it('a rollback skips versions deleted since', async () => {
    const repo = await fakeRepository(path.join(dir, 'b'), {1: {}, 2: {}, 3: {}})
    for (const v of [1, 2, 3]) await setAlias(repo, 'digits', 'production', v)
    await rm(path.join(repo, 'digits', '2'), {recursive: true})
    assert.equal((await rollbackAlias(repo, 'digits', 'production')).move.version, 1)
    assert.deepEqual(aliasStack((await readAliases(repo, 'digits')).history, 'production'), [1])
  })

  it('refuses unknown versions, bad alias names and a damaged aliases file, changing nothing', async () => {
    const repo = await fakeRepository(path.join(dir, 'c'), {1: {}})
    await assert.rejects(setAlias(repo, 'digits', 'production', 7), (e: unknown) => e instanceof UserError && e.code === 'MODEL_VERSION_NOT_FOUND' && /versions: 1/.test(e.message))
    await assert.rejects(setAlias(repo, 'digits', '3prod', 1), (e: unknown) => e instanceof UserError && e.code === 'USAGE')
    await assert.rejects(setAlias(repo, 'digits', 'a/b', 1), (e: unknown) => e instanceof UserError && e.code === 'USAGE')
    await writeFile(path.join(repo, 'digits', 'aliases.json'), '{"aliases": ')
    await assert.rejects(setAlias(repo, 'digits', 'production', 1), (e: unknown) => e instanceof UserError && e.code === 'ALIASES_INVALID' && e.exitCode === 3)
    assert.equal(await readFile(path.join(repo, 'digits', 'aliases.json'), 'utf8'), '{"aliases": ')
  })

  it('concurrent moves are all kept (compare-and-swap on the file)', async () => {
    const repo = await fakeRepository(path.join(dir, 'd'), {1: {}, 2: {}})
    await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map((alias, i) => setAlias(repo, 'digits', alias, 1 + (i % 2))))
    const file = await readAliases(repo, 'digits')
    assert.deepEqual(file.aliases, {a: 1, b: 2, c: 1, d: 2, e: 1, f: 2})
    assert.equal(file.history.length, 6)
  })

  it('parses name@alias and name@version; labels from the config win over aliases', () => {
    assert.deepEqual(parseModelRef('digits@production'), {name: 'digits', alias: 'production'})
    assert.deepEqual(parseModelRef('digits@3'), {name: 'digits', version: 3})
    assert.deepEqual(parseModelRef('digits'), {name: 'digits'})
    assert.deepEqual(parseModelRef('@x'), {name: '@x'})
    assert.equal(resolveLabel('stable', {stable: 1}, {stable: 2, production: 3}), 1)
    assert.equal(resolveLabel('production', {stable: 1}, {production: 3}), 3)
    assert.equal(resolveLabel('toString', {}, {}), undefined)
  })

  it('serves aliased versions whatever the policy, and only the pinned one for name@alias', () => {
    assert.deepEqual(versionsToServe([1, 2, 3], {production: 1, staging: 3}), {candidates: [3, 2, 1], always: [3, 1]})
    assert.deepEqual(versionsToServe([1, 2, 3], {production: 1}, 'production'), {candidates: [], always: [1]})
    assert.deepEqual(versionsToServe([1, 2], {production: 5}, 'production'), {candidates: [], always: []})
  })

  it('lists versions with formats, accuracy, dataset version and aliases', async () => {
    const repo = await fakeRepository(path.join(dir, 'e'), {1: {accuracy: 0.91}, 2: {accuracy: 0.93, formats: ['tfjs', 'onnx']}, 3: 'bare'})
    await setAlias(repo, 'digits', 'production', 2)
    await setAlias(repo, 'digits', 'staging', 2)
    const rows = await listRegistry(repo)
    assert.deepEqual(rows, [
      {name: 'digits', version: 1, formats: ['tfjs'], accuracy: 0.91, datasetVersion: 2, aliases: [], runId: 'run-1'},
      {name: 'digits', version: 2, formats: ['tfjs', 'onnx'], accuracy: 0.93, datasetVersion: 2, aliases: ['production', 'staging'], runId: 'run-2'},
      {name: 'digits', version: 3, formats: ['onnx'], aliases: []},
    ])
    assert.match(registryTable(rows).split('\n')[3]!, /^digits\s+2\s+tfjs,onnx\s+0\.9300\s+v2\s+production,staging\s+run-2$/)
    assert.deepEqual(await resolveModelRef(repo, 'digits@staging'), {name: 'digits', version: 2, dir: path.join(repo, 'digits', '2')})
    await assert.rejects(resolveModelRef(repo, 'digits@canary'), (e: unknown) => e instanceof UserError && e.code === 'ALIAS_NOT_FOUND')
  })
})

describe('aliases end to end: ml models, ml predict and ml serve follow an alias', () => {
  let cleanup: () => Promise<void>
  let model: ServeModel
  let servers: ServeHandle[] = []

  before(async () => {
    const temp = await tempDir('ml-alias-serve-')
    cleanup = temp.cleanup
    model = await trainServeModel(temp.dir, {train: 200, test: 50})
    await cp(model.versionDir, path.join(model.repository, 'digits', '2'), {recursive: true})
  })
  after(async () => {
    await Promise.all(servers.map((s) => s.close()))
    await cleanup?.()
  })

  it('ml models alias / list / rollback and ml predict --model name@alias', async () => {
    const cli = (args: string[]) => runJson<any>([...args, '--config', model.config])
    const set = await cli(['models', 'alias', '2', 'production'])
    assert.equal(set.code, 0, set.stderr)
    assert.equal(set.json.version, 2)
    const list = await cli(['models', 'list'])
    assert.deepEqual(list.json.versions.map((v: {version: number; aliases: string[]; formats: string[]}) => [v.version, v.aliases, v.formats]), [
      [1, [], ['tfjs', 'onnx']],
      [2, ['production'], ['tfjs', 'onnx']],
    ])
    const digit = path.join(model.dir, 'data', 'test', '3')
    const file = path.join(digit, (await readdir(digit)).sort()[0]!)
    const predicted = await cli(['predict', file, '--model', 'digits@production'])
    assert.equal(predicted.code, 0, predicted.stderr)
    assert.equal(predicted.json.model.dir, path.join(model.repository, 'digits', '2'))
    const back = await cli(['models', 'rollback'])
    assert.equal(back.code, 2, 'nothing to roll back to: production was only ever set once')
    assert.equal(back.json.error.code, 'NOTHING_TO_ROLL_BACK')
    const missing = await cli(['predict', file, '--model', 'digits@canary'])
    assert.equal(missing.code, 3)
    assert.equal(missing.json.error.code, 'ALIAS_NOT_FOUND')
  })

  it('the alias is a TF Serving version label, hot-reloaded when moved; name@alias serves only its version', async () => {
    const repo = model.repository
    await setAlias(repo, 'digits', 'production', 1)
    const options = (fields: object) => serveOptions({repository: repo, port: 0, instances: 1, maxBatchSize: 4, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm', ...fields})
    const all = await startServer(options({}), {log: new JsonLog(undefined)})
    const pinned = await startServer(options({models: [{name: 'digits', labels: {}, pin: 'production'}]}), {log: new JsonLog(undefined)})
    servers = [all, pinned]
    const labelled = async (server: ServeHandle, label: string) => (await request(`${server.url}/v1/models/digits/labels/${label}`)).json.model_version_status.map((s: {version: string}) => s.version)
    const versions = async (server: ServeHandle) => (await request(`${server.url}/v1/models/digits`)).json.model_version_status.map((s: {version: string}) => s.version)
    const classify = async (server: ServeHandle, suffix = '') => (await request(`${server.url}/v2/models/digits${suffix}/infer`, {body: {inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', data: Array(784).fill(0)}]}})).json.model_version
    assert.deepEqual(await labelled(all, 'production'), ['1'])
    assert.deepEqual(await versions(all), ['2', '1'])
    assert.deepEqual(await versions(pinned), ['1'])
    assert.equal(await classify(pinned), '1')
    assert.equal((await request(`${all.url}/v1/models/digits/labels/canary`)).status, 404)

    await setAlias(repo, 'digits', 'production', 2)
    await Promise.all([all.repository.scan(), pinned.repository.scan()])
    assert.deepEqual(await labelled(all, 'production'), ['2'])
    assert.deepEqual(await labelled(pinned, 'production'), ['2'])
    assert.deepEqual(await versions(pinned), ['2'], 'the version the alias left is unloaded')
    assert.equal(await classify(pinned), '2')

    await rollbackAlias(repo, 'digits', 'production')
    await pinned.repository.scan()
    assert.deepEqual(await versions(pinned), ['1'])
    assert.equal(await classify(pinned), '1')

    // A move to a version that cannot be loaded leaves the alias (and the traffic) where it was.
    await cp(model.versionDir, path.join(repo, 'digits', '3'), {recursive: true})
    // Broken for every engine: the tfjs model and the ONNX graph alike.
    await writeFile(path.join(repo, 'digits', '3', 'model.json'), '{"format": "layers-model", "modelTopology": ')
    await writeFile(path.join(repo, 'digits', '3', 'model.onnx'), 'not an onnx graph')
    await setAlias(repo, 'digits', 'production', 3)
    await pinned.repository.scan()
    assert.deepEqual(await labelled(pinned, 'production'), ['1'])
    assert.equal(await classify(pinned), '1')
  })
})
