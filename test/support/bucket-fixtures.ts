// What the Cloud Storage (cloud-fixtures.ts) and S3 (aws-fixtures.ts) tests share: MNIST digits as PNG
// objects in class folders, the MNIST project config whose data, runs and exports all live under one
// bucket prefix, and the part of a child process's environment that keeps it on this machine.
import path from 'node:path'
import {stringify} from 'yaml'
import {mnistPng, readMnist} from '../../src/lib/data/mnist.js'
import {LOOPBACK_ONLY} from './loopback-only.js'

/** Puts `count` MNIST digits of `split` as PNGs at <prefix>/<digit>/<split>-<n>.png through `put`. */
export async function uploadDigits(prefix: string, split: 'train' | 'test', count: number, put: (key: string, png: Buffer) => unknown): Promise<void> {
  const sample = await readMnist(split, 0, count)
  for (let i = 0; i < count; i++) await put(`${prefix}/${sample.labels[i]}/${split}-${String(i).padStart(5, '0')}.png`, await mnistPng(sample, i))
}

/** Environment for `ml` child processes: the loopback guard loaded first, its log in `dir` (see guardNetwork). */
export function loopbackEnv(dir: string): NodeJS.ProcessEnv {
  return {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${LOOPBACK_ONLY}`.trim(),
    ML_TEST_NETLOG: path.join(dir, 'non-loopback.log'),
  }
}

/**
 * An MNIST config whose sources (of `sourceType`), store, runs and exports are all under `base`
 * (gs://<bucket>/<root> or s3://<bucket>/<root>); `train` adds the remote-training section
 * (vertex, sagemaker) and `extra` top-level sections (tune).
 */
export function bucketConfig(
  base: string,
  sourceType: 'gcs' | 's3',
  overrides: {train?: object; data?: object},
  remote: {train?: object; extra?: object} = {},
): string {
  return stringify({
    name: 'digits',
    data: {
      sources: [{type: sourceType, uri: `${base}/images/train`}, {type: sourceType, uri: `${base}/images/test`, split: 'test'}],
      image: {width: 28, height: 28, channels: 1},
      split: {validation: 0.1, test: 0, seed: 0},
      store: `${base}/dataset`,
      shardSize: 128,
      ...overrides.data,
    },
    model: {preset: 'mlp'},
    train: {
      epochs: 1,
      batchSize: 32,
      backend: 'wasm',
      seed: 7,
      runs: `${base}/runs`,
      ...remote.train,
      ...overrides.train,
    },
    export: {dir: `${base}/models`},
    ...remote.extra,
  })
}
