// Fixtures for the Google Cloud tests: real MNIST digits uploaded to the Cloud Storage stand-in, configs
// on gs://, and the environment that points the ml CLI at the stand-ins (and nowhere else); what they
// share with the S3 ones is in bucket-fixtures.ts.
import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {configureGcs} from '../../src/lib/storage/gcs.js'
import {GcsServer} from './gcs-server.js'
import {bucketConfig, loopbackEnv, uploadDigits} from './bucket-fixtures.js'
import {tempDir} from './fixtures.js'
import {VertexServer} from './vertex-server.js'

/**
 * Turns on the loopback guard's log for this test process (and, through cloudEnv, its children);
 * returns a check for the end of the file: no connection to another host was even attempted.
 */
export function guardNetwork(dir: string): () => Promise<void> {
  const log = path.join(dir, 'non-loopback.log')
  process.env.ML_TEST_NETLOG = log
  return async () => {
    const attempts = await readFile(log, 'utf8').catch(() => '')
    assert.equal(attempts, '', `attempts to reach other hosts:\n${attempts}`)
  }
}

/** Uploads `count` MNIST digits of `split` as PNGs under gs://<bucket>/<prefix>/<digit>/<n>.png. */
export async function uploadMnist(gcs: GcsServer, bucket: string, prefix: string, split: 'train' | 'test', count: number): Promise<void> {
  await uploadDigits(prefix, split, count, (key, png) => gcs.put(bucket, key, png, 'image/png'))
}

/**
 * Environment for `ml` child processes: both clients on the stand-ins, short polls and backoff, and
 * GOOGLE_APPLICATION_CREDENTIALS naming a missing file, so that anything that still tried
 * Application Default Credentials would fail at once instead of looking for a metadata server.
 */
export function cloudEnv(gcs: GcsServer, vertex: VertexServer | undefined, dir: string): NodeJS.ProcessEnv {
  return {
    ...loopbackEnv(dir),
    ML_GCS_ENDPOINT: gcs.url,
    ML_GCS_RETRIES: '2',
    ML_GCS_MAX_RETRY_DELAY_MS: '1000',
    ...(vertex ? {ML_VERTEX_ENDPOINT: vertex.url} : {}),
    ML_VERTEX_POLL_MS: '40',
    GOOGLE_APPLICATION_CREDENTIALS: path.join(dir, 'no-credentials.json'),
    GOOGLE_CLOUD_PROJECT: 'ml-test-project',
    // Child processes must not inherit a parent's hypertune or Vertex settings.
    CLOUD_ML_TRIAL_ID: '',
    ML_HYPERTUNE: '',
    ML_TUNE_PARAMS: '',
    AIP_MODEL_DIR: '',
    AIP_CHECKPOINT_DIR: '',
  }
}

/** The Cloud Storage stand-in of one test file, and the temporary folder the file works in. */
export interface CloudStorageStandIn {
  dir: string
  gcs: GcsServer
  /** Stops the stand-in (and in-process Cloud Storage use), checks the network guard's log, removes dir. */
  close(): Promise<void>
}

/** Starts the stand-in with `buckets`, in a new temporary folder named after `prefix`, the network guard on. */
export async function startCloudStorage(prefix: string, buckets: string[]): Promise<CloudStorageStandIn> {
  const {dir, cleanup} = await tempDir(prefix)
  const checkNetwork = guardNetwork(dir)
  const gcs = await GcsServer.start({buckets})
  const close = async () => {
    configureGcs(undefined)
    await gcs.close()
    await checkNetwork()
    await cleanup()
  }
  return {dir, gcs, close}
}

/** The Cloud Storage and Vertex AI stand-ins of one test file, and the environment of its `ml` child processes. */
export interface GoogleCloudStandIns extends CloudStorageStandIn {
  vertex: VertexServer
  /** cloudEnv for the stand-ins and dir. */
  env: NodeJS.ProcessEnv
}

/** startCloudStorage, and the Vertex AI stand-in beside it. */
export async function startGoogleCloud(prefix: string, buckets: string[]): Promise<GoogleCloudStandIns> {
  const storage = await startCloudStorage(prefix, buckets)
  const vertex = await VertexServer.start()
  const close = async () => {
    await vertex.close()
    await storage.close()
  }
  return {...storage, vertex, env: cloudEnv(storage.gcs, vertex, storage.dir), close}
}

export const VERTEX = {
  project: 'ml-test-project',
  region: 'us-central1',
  machineType: 'g2-standard-8',
  acceleratorType: 'NVIDIA_L4',
  acceleratorCount: 2,
  image: 'us-docker.pkg.dev/ml-test-project/ml/ml:test',
}

/** An MNIST config whose data, runs and exports are all on gs://<bucket>/<root>. */
export function gsConfig(bucket: string, root: string, overrides: {train?: object; data?: object; tune?: object; vertex?: object} = {}): string {
  const base = `gs://${bucket}/${root}`
  return bucketConfig(base, 'gcs', overrides, {
    train: {vertex: {...VERTEX, baseOutputDir: `${base}/vertex`, ...overrides.vertex}},
    extra: overrides.tune ? {tune: overrides.tune} : {},
  })
}
