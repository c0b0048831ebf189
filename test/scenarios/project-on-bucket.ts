// A whole project on one bucket, through the real CLI: the scenarios that test/lib/cloud/pipeline.test.ts
// (gs:// on the Cloud Storage stand-in) and test/slow/aws/pipeline.test.ts (s3:// on moto) both run,
// written once with the bucket as a parameter. Each file adds what only its cloud has.
import assert from 'node:assert/strict'
import {mnistPng, readMnist} from '../../src/lib/data/mnist.js'
import {readJson} from '../../src/lib/storage/index.js'
import {runJson} from '../support/cli.js'
import {referencePredictions} from '../support/serve-fixtures.js'

/** The bucket of a project (config at <scheme>://<bucket>/proj/ml.yaml, made by gsConfig or s3Config). */
export interface ProjectBucket {
  scheme: 'gs' | 's3'
  bucket: string
  /** Object names under a prefix, read straight from the stand-in. */
  names(prefix: string): Promise<string[]>
  /** An object's content as text, read straight from the stand-in. */
  text(key: string): Promise<string>
  /** Points this process's storage layer at the stand-in, to read what the CLI wrote. */
  useFromHere(): void
}

/** How the CLI runs: its environment (pointing at the stand-in) and working folder. */
export interface CliContext {
  env: NodeJS.ProcessEnv
  cwd: string
}

const configOf = (b: ProjectBucket) => `${b.scheme}://${b.bucket}/proj/ml.yaml`

/**
 * `ml ingest` of the bucket's source into a store on the same bucket: 300 + 60 digits, a broken PNG
 * quarantined, a hidden object and one outside any class folder skipped; a second ingest adds nothing.
 * `afterFirst` checks what only this cloud shows, between the two ingests.
 */
export async function ingestsIntoBucket(b: ProjectBucket, cli: CliContext, afterFirst?: () => Promise<void> | void): Promise<void> {
  const base = `${b.scheme}://${b.bucket}`
  const {code, json, stderr} = await runJson<Record<string, any>>(['ingest', '--config', configOf(b)], cli)
  assert.equal(code, 0, stderr)
  assert.equal(json.store, `${base}/proj/dataset`)
  assert.equal(json.datasetVersion, 1)
  assert.equal(json.accepted + json.duplicates, 360)
  assert.deepEqual(json.rejectedByReason, {'unsupported-format': 1, 'no-label': 1})
  assert.equal(json.classes, 10)
  const names = await b.names('proj/dataset/')
  assert.ok(names.includes('proj/dataset/manifest.json'))
  assert.ok(names.includes('proj/dataset/manifests/v0001.json'))
  assert.ok(names.some((n) => /shards\/train-000001-00000\.tfrecord$/.test(n)))
  assert.ok(!names.includes('proj/dataset/.lock'), 'the writer lock is released')
  const quarantine = await b.text('proj/dataset/quarantine.jsonl')
  const origin = `${b.scheme}:\\/\\/${b.bucket}\\/proj\\/images\\/train\\/3\\/broken\\.png`
  assert.match(quarantine, new RegExp(`"origin":"${origin}","reason":"unsupported-format"`))
  assert.doesNotMatch(quarantine, /DS_Store/, 'hidden objects are skipped like hidden files')
  await afterFirst?.()

  const again = await runJson<Record<string, any>>(['ingest', '--config', configOf(b)], cli)
  assert.equal(again.code, 0, again.stderr)
  assert.equal(again.json.datasetVersion, 1, 'nothing new: same version')
  assert.equal(again.json.accepted, 0)
}

/** `ml train` with the run directory on the bucket; returns the run's files, relative to its directory. */
export async function trainsIntoBucket(b: ProjectBucket, cli: CliContext): Promise<string[]> {
  const base = `${b.scheme}://${b.bucket}`
  const {code, json, stderr} = await runJson<Record<string, any>>(['train', '--config', configOf(b)], cli)
  assert.equal(code, 0, stderr)
  assert.ok(json.runDir.startsWith(`${base}/proj/runs/digits-`), json.runDir)
  const runKey = json.runDir.slice(`${base}/`.length)
  const files = (await b.names(`${runKey}/`)).map((n) => n.slice(runKey.length + 1))
  for (const f of ['run.json', 'config.json', 'labels.json', 'metrics.jsonl', 'model/model.json', 'model/weights.bin', 'checkpoints/LATEST']) {
    assert.ok(files.includes(f), `${f} in ${files.join(', ')}`)
  }
  assert.ok(!files.some((f) => f.includes('.staging-')), 'no staging folder left behind')
  b.useFromHere()
  const info = await readJson<{status: string; dataset: {store: string}}>(`${json.runDir}/run.json`)
  assert.equal(info.status, 'completed')
  assert.equal(info.dataset.store, `${base}/proj/dataset`)
  assert.equal((await b.text('proj/runs/LATEST')).trim(), json.runId)
  return files
}

/** The first test digits, as `ml serve` gets them. */
export async function testDigits(count: number): Promise<Array<{label: string; png: Buffer}>> {
  const sample = await readMnist('test', 0, count)
  return Promise.all(Array.from({length: sample.count}, async (_, i) => ({label: String(sample.labels[i]), png: await mnistPng(sample, i)})))
}

/** The top label `ml serve` gives each digit through a version's TF Serving :classify route. */
export async function classifyDigits(url: string, version: number, digits: Array<{png: Buffer}>): Promise<string[]> {
  const answers: string[] = []
  for (const digit of digits) {
    const response = await fetch(`${url}/v1/models/digits/versions/${version}:classify`, {method: 'POST', headers: {'Content-Type': 'image/png'}, body: digit.png})
    assert.equal(response.status, 200, await response.clone().text())
    const body = (await response.json()) as {results: Array<Array<[string, number]>>}
    answers.push(body.results[0]![0]![0])
  }
  return answers
}

/** The reference: the top label of each digit from the version in the local folder `local`, run in this process. */
export async function referenceTop(local: string, digits: Array<{label: string; png: Buffer}>): Promise<{top: string[]; labels: string[]}> {
  const {predictor, expected} = await referencePredictions(local, digits)
  const top = Array.from({length: digits.length}, (_, i) => {
    const row = expected.subarray(i * predictor.labels.length, (i + 1) * predictor.labels.length)
    return predictor.labels[row.indexOf(Math.max(...row))]!
  })
  return {top, labels: predictor.labels}
}
