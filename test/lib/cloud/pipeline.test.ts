// gs:// everywhere, through the real CLI: config, gcs source, dataset store, run directory and model
// repository on the Cloud Storage stand-in, then the export registered in the Vertex AI stand-in.
// Before anything else: no test here may reach a host other than this machine.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import {readdir} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {DatasetStore, readManifest} from '../../../src/lib/data/store.js'
import {configureGcs} from '../../../src/lib/storage/gcs.js'
import {downloadDir} from '../../../src/lib/storage/index.js'
import {UserError} from '../../../src/lib/errors.js'
import {runJson} from '../../support/cli.js'
import {gsConfig, startCloudStorage, startGoogleCloud, uploadMnist, type CloudStorageStandIn, type GoogleCloudStandIns} from '../../support/cloud-fixtures.js'
import {startServe} from '../../support/serve-fixtures.js'
import type {GcsServer} from '../../support/gcs-server.js'
import {classifyDigits, ingestsIntoBucket, referenceTop, testDigits, trainsIntoBucket, type ProjectBucket} from '../../scenarios/project-on-bucket.js'
import type {VertexServer} from '../../support/vertex-server.js'

const BUCKET = 'ml-data'
const CONFIG = `gs://${BUCKET}/proj/ml.yaml`

describe('a project entirely on gs://', () => {
  let cloud: GoogleCloudStandIns
  let gcs: GcsServer
  let vertex: VertexServer
  let dir: string
  let env: NodeJS.ProcessEnv
  const bucket: ProjectBucket = {
    scheme: 'gs',
    bucket: BUCKET,
    names: async (prefix) => gcs.names(BUCKET, prefix),
    text: async (key) => gcs.get(BUCKET, key)!.data.toString(),
    useFromHere: () => configureGcs({endpoint: gcs.url, auth: 'none'}),
  }

  before(async () => {
    cloud = await startGoogleCloud('ml-cloud-pipeline-', [BUCKET])
    ;({gcs, vertex, dir, env} = cloud)
    await uploadMnist(gcs, BUCKET, 'proj/images/train', 'train', 300)
    await uploadMnist(gcs, BUCKET, 'proj/images/test', 'test', 60)
    gcs.put(BUCKET, 'proj/images/train/3/broken.png', 'not a png at all')
    gcs.put(BUCKET, 'proj/images/train/.DS_Store', 'hidden')
    gcs.put(BUCKET, 'proj/images/train/README.txt', 'no class folder')
    gcs.put(BUCKET, 'proj/ml.yaml', gsConfig(BUCKET, 'proj'))
  })
  after(() => cloud.close())

  it('ingests a gcs source into a gs:// store, with quarantine and dedupe', async () => {
    await ingestsIntoBucket(bucket, {env, cwd: dir}, () => {
      // The first manifest was created only-if-absent, the lock likewise.
      const creates = gcs.requests.filter((r) => r.upload && r.query.ifGenerationMatch === '0').map((r) => r.query.name)
      assert.ok(creates.includes('proj/dataset/manifest.json') && creates.includes('proj/dataset/.lock'), creates.join(', '))
    })
  })

  it('trains with the run directory on gs://', async () => {
    const files = await trainsIntoBucket(bucket, {env, cwd: dir})
    assert.ok(files.some((f) => /^checkpoints\/epoch-0001-step-000000\/state\.json$/.test(f)))
  })

  it('exports to a gs:// model repository and registers the version in Vertex AI', async () => {
    const {code, json, stderr} = await runJson<Record<string, any>>(['export', '--config', CONFIG, '--to', 'vertex'], {env, cwd: dir})
    assert.equal(code, 0, stderr)
    const versionDir = `gs://${BUCKET}/proj/models/digits/1`
    assert.equal(json.dir, versionDir)
    assert.ok(gcs.get(BUCKET, 'proj/models/digits/1/model.json'))
    assert.ok(gcs.get(BUCKET, 'proj/models/digits/1/weights.bin'))
    const upload = vertex.requests.find((r) => r.path === '/projects/ml-test-project/locations/us-central1/models:upload')
    assert.ok(upload, 'uploadModel was called on the regional parent')
    const model = (upload.body as {model: Record<string, any>}).model
    assert.equal(model.artifactUri, versionDir)
    assert.equal(model.displayName, 'digits')
    assert.equal(model.containerSpec.imageUri, 'us-docker.pkg.dev/ml-test-project/ml/ml:test')
    assert.equal(model.containerSpec.predictRoute, '/v1/models/digits/versions/1:predict')
    assert.equal(model.containerSpec.healthRoute, '/v2/health/ready')
    assert.deepEqual(model.containerSpec.ports, [{containerPort: 8080}])
    assert.deepEqual(model.containerSpec.args, ['serve', '--repository', `gs://${BUCKET}/proj/models`, '--model', 'digits', '--host', '0.0.0.0'])
    // The long-running operation was polled to completion and its model name printed.
    assert.ok(vertex.requests.some((r) => r.method === 'GET' && /\/operations\//.test(r.path)))
    assert.match(json.vertex.model, /^projects\/ml-test-project\/locations\/us-central1\/models\/\d+$/)
    assert.ok(vertex.models.has(json.vertex.model))
  })

  it('serves the exported model straight from the gs:// repository, as the Vertex AI container is told to, and picks up a new version', async () => {
    const serveCopies = async () => (await readdir(os.tmpdir())).filter((n) => n.startsWith('ml-serve-models-')).sort()
    const copiesBefore = await serveCopies()
    // The container args registered above (serve --repository gs://.../models --model digits), on the
    // port Vertex AI names in AIP_HTTP_PORT (here any free one) and on loopback only.
    const server = await startServe(['--repository', `gs://${BUCKET}/proj/models`, '--model', 'digits', '--instances', '1'], {env: {...env, AIP_HTTP_PORT: '0'}, cwd: dir})
    try {
      const loaded = await server.waitForEvent((e) => e.event === 'model-loaded' && e.version === 1)
      assert.equal(loaded.model, 'digits')
      assert.equal((await serveCopies()).length, copiesBefore.length + 1, 'the version was copied to a local folder to load')
      const digits = await testDigits(8)
      const v1 = await classifyDigits(server.url, 1, digits)
      // The reference: the same version copied here and run in this process.
      bucket.useFromHere()
      const local = path.join(dir, 'digits-1')
      await downloadDir(`gs://${BUCKET}/proj/models/digits/1`, local)
      const {top, labels} = await referenceTop(local, digits)
      assert.deepEqual(v1, top)
      // What Vertex AI sends to the registered predictRoute, and the answer it expects.
      const predicted = await fetch(`${server.url}/v1/models/digits/versions/1:predict`, {
        method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({instances: digits.map((d) => ({b64: d.png.toString('base64')})), parameters: {}}),
      })
      assert.equal(predicted.status, 200, await predicted.clone().text())
      const predictions = ((await predicted.json()) as {predictions: number[][]}).predictions
      assert.deepEqual(predictions.map((p) => labels[p.indexOf(Math.max(...p))]), top)
      assert.equal((await fetch(`${server.url}/v2/health/ready`)).status, 200)
      // A new version appears in the bucket: copied server-side, as a CI job would publish it.
      for (const name of gcs.names(BUCKET, 'proj/models/digits/1/')) {
        const object = gcs.get(BUCKET, name)!
        gcs.put(BUCKET, name.replace('/digits/1/', '/digits/2/'), object.data, object.contentType)
      }
      await server.waitForEvent((e) => e.event === 'model-loaded' && e.version === 2)
      assert.deepEqual(await classifyDigits(server.url, 2, digits), v1, 'the same weights give the same answers')
      const ready = await fetch(`${server.url}/v2/models/digits/versions/2/ready`)
      assert.equal(ready.status, 200)
    } finally {
      server.child.kill('SIGTERM')
      const result = await server.done
      assert.equal(result.code, 0, result.stderr)
    }
    // Its local copies went with it.
    assert.deepEqual(await serveCopies(), copiesBefore)
  })

  it('says what to set when Cloud Storage credentials are missing (exit 5), without a request', async () => {
    const before = gcs.requests.length
    const {code, json} = await runJson<{error: {code: string; suggestions: string[]}}>(['train', '--config', CONFIG], {env: {...env, ML_GCS_AUTH: 'adc'}, cwd: dir})
    assert.equal(code, 5)
    assert.equal(json.error.code, 'GCS_AUTH')
    assert.match(json.error.suggestions.join(' '), /gcloud auth application-default login/)
    assert.match(json.error.suggestions.join(' '), /GOOGLE_APPLICATION_CREDENTIALS/)
    assert.equal(gcs.requests.length, before)
  })
})

describe('dataset store on gs:// with concurrent writers', () => {
  let gcs: GcsServer
  const image = {width: 4, height: 3, channels: 1 as const, fit: 'fill' as const}
  const rule = {validation: 0.1, test: 0.1, seed: 0}
  let storage: CloudStorageStandIn
  before(async () => {
    storage = await startCloudStorage('ml-cloud-store-', ['stores'])
    gcs = storage.gcs
    configureGcs({endpoint: gcs.url, auth: 'none', maxRetries: 1, maxRetryDelayMs: 1})
  })
  after(() => storage.close())

  const record = async (store: DatasetStore, i: number) => {
    const sharp = (await import('sharp')).default
    const encoded = await sharp(Buffer.alloc(12, i * 7), {raw: {width: 4, height: 3, channels: 1}}).png().toBuffer()
    return {key: `k${i}`.padEnd(64, '0'), label: store.classIndex('a'), text: 'a', encoded, width: 4, height: 3, channels: 1}
  }

  it('refuses to publish over a manifest another writer replaced meanwhile', async () => {
    const dir = 'gs://stores/conflict'
    const store = await DatasetStore.open(dir, image, rule)
    await store.writeShard('train', [await record(store, 1)])
    // Another writer (on another host, past a stale lock) commits first: it created version 1.
    gcs.put('stores', 'conflict/manifests/v0001.json', JSON.stringify({format: 'ml-dataset', formatVersion: 1, version: 1, shards: []}))
    await assert.rejects(
      store.commit({accepted: 1, duplicates: 0, rejected: 0, sources: []}),
      (error: unknown) => error instanceof UserError && error.code === 'DATASET_CONFLICT',
    )
    await store.discard()
    await store.close()
  })

  it('commits twice in one session with generation preconditions, and takes no lock held on another host', async () => {
    const dir = 'gs://stores/twice'
    const store = await DatasetStore.open(dir, image, rule)
    await store.writeShard('train', [await record(store, 1)])
    await store.commit({accepted: 1, duplicates: 0, rejected: 0, sources: []})
    const first = gcs.get('stores', 'twice/manifest.json')!.generation
    await store.writeShard('train', [await record(store, 2)])
    await store.commit({accepted: 1, duplicates: 0, rejected: 0, sources: []})
    const matched = gcs.requests.filter((r) => r.upload && r.query.name === 'twice/manifest.json').map((r) => r.query.ifGenerationMatch)
    assert.deepEqual(matched, ['0', String(first)])
    await store.close()
    assert.equal((await readManifest(dir)).version, 2)

    gcs.put('stores', 'twice/.lock', '4242 some-other-host\n')
    await assert.rejects(DatasetStore.open(dir, image, rule), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'DATASET_LOCKED')
      assert.match(error.message, /pid 4242 on some-other-host/)
      return true
    })
  })
})
