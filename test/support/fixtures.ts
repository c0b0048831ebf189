// Shared test fixtures: temp folders, small real-MNIST class-folder trees and config files.
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {stringify} from 'yaml'
import {materialiseMnist} from '../../src/lib/data/mnist.js'

export async function tempDir(prefix = 'ml-test-'): Promise<{dir: string; cleanup: () => Promise<void>}> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  return {dir, cleanup: () => rm(dir, {recursive: true, force: true})}
}

/** Writes `train` MNIST training digits and `test` test digits as PNG class folders under dir/data. */
export async function mnistFolders(dir: string, train: number, test: number): Promise<{train: string; test: string}> {
  const trainDir = path.join(dir, 'data', 'train')
  const testDir = path.join(dir, 'data', 'test')
  await materialiseMnist(trainDir, 'train', 0, train)
  if (test > 0) await materialiseMnist(testDir, 'test', 0, test)
  return {train: trainDir, test: testDir}
}

/** A config for MNIST folders in `dir` (paths relative to the config file), with overrides merged. */
export async function writeMnistConfig(dir: string, overrides: {model?: object; train?: object; data?: object; name?: string} = {}): Promise<string> {
  const config = {
    name: overrides.name ?? 'digits',
    data: {
      sources: [
        {type: 'folder', path: 'data/train'},
        {type: 'folder', path: 'data/test', split: 'test'},
      ],
      image: {width: 28, height: 28, channels: 1},
      split: {validation: 0.1, test: 0, seed: 0},
      store: 'dataset',
      ...overrides.data,
    },
    model: overrides.model ?? {preset: 'mlp'},
    train: {epochs: 2, batchSize: 32, backend: 'wasm', seed: 7, runs: 'runs', ...overrides.train},
    export: {dir: 'models'},
  }
  const file = path.join(dir, 'ml.yaml')
  await writeFile(file, stringify(config))
  return file
}
