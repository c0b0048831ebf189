// Training checkpoints: model weights, optimizer state, data position and RNG states, written into
// a staging folder and renamed into place, so a killed run always leaves a complete checkpoint.
import * as tf from '../engine/tf.js'

type NamedTensor = {name: string; tensor: tf.Tensor}
import {exists, joinPath, listNames, readBytes, readJson, readText, remove, swapDir, writeFileAtomic} from '../storage/index.js'
import {UserError} from '../errors.js'
import {loadModel, saveModel} from '../model/artifact.js'
import type {EpochMetrics} from '../model/run-dir.js'

export interface TrainingPosition {
  /** Epochs fully done. */
  epoch: number
  /** Steps done inside the current (unfinished) epoch; 0 at an epoch boundary. */
  stepInEpoch: number
  globalStep: number
  /** Saved PRNG states by purpose (dropout, augment), for a mid-epoch resume. */
  rng: Record<string, object>
  /** Running sums of the unfinished epoch, so its metrics come out as if never interrupted. */
  partial?: {lossSum: number; correct: number; seen: number; seconds: number}
  history: EpochMetrics[]
  best?: {epoch: number; value: number}
  epochsWithoutImprovement: number
  /** The training phase the saved optimizer state belongs to (model.base runs with train.fineTune). */
  phase?: 'head' | 'fine-tune'
}

interface TensorEntry {
  name: string
  shape: number[]
  dtype: 'float32' | 'int32'
  offset: number
  length: number
}

async function serialiseTensors(named: NamedTensor[]): Promise<{entries: TensorEntry[]; data: Uint8Array}> {
  const entries: TensorEntry[] = []
  const chunks: Uint8Array[] = []
  let offset = 0
  for (const {name, tensor} of named) {
    const values = await tensor.data()
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength).slice()
    entries.push({name, shape: tensor.shape, dtype: tensor.dtype as 'float32' | 'int32', offset, length: bytes.byteLength})
    chunks.push(bytes)
    offset += bytes.byteLength
  }
  const data = new Uint8Array(offset)
  let at = 0
  for (const chunk of chunks) {
    data.set(chunk, at)
    at += chunk.byteLength
  }
  return {entries, data}
}

function deserialiseTensors(entries: TensorEntry[], data: Buffer): NamedTensor[] {
  return entries.map((e) => {
    const slice = data.subarray(e.offset, e.offset + e.length)
    const copy = new Uint8Array(slice).buffer
    const values = e.dtype === 'int32' ? new Int32Array(copy) : new Float32Array(copy)
    return {name: e.name, tensor: tf.tensor(values, e.shape, e.dtype)}
  })
}

const LATEST = 'LATEST'

export function checkpointName(position: TrainingPosition): string {
  return `epoch-${String(position.epoch).padStart(4, '0')}-step-${String(position.stepInEpoch).padStart(6, '0')}`
}

/** Writes a checkpoint and points LATEST at it; keeps the newest `keep` checkpoints. */
export async function saveCheckpoint(
  checkpointsDir: string,
  model: tf.LayersModel,
  optimizer: tf.Optimizer,
  position: TrainingPosition,
  keep = 2,
): Promise<string> {
  const name = checkpointName(position)
  const staging = joinPath(checkpointsDir, `.staging-${name}-${process.pid}`)
  await remove(staging)
  await saveModel(model, staging)
  const optimizerWeights = await optimizer.getWeights()
  const {entries, data} = await serialiseTensors(optimizerWeights)
  // getWeights returns the optimizer's own variables plus a fresh iteration-count tensor: free that one.
  for (const {tensor} of optimizerWeights) if (!(tensor instanceof tf.Variable)) tensor.dispose()
  await writeFileAtomic(joinPath(staging, 'optimizer.bin'), data)
  await writeFileAtomic(joinPath(staging, 'optimizer.json'), JSON.stringify({entries}))
  await writeFileAtomic(joinPath(staging, 'state.json'), JSON.stringify(position))
  const target = joinPath(checkpointsDir, name)
  // A rename locally; on gs:// a copy, which is still safe: LATEST names the checkpoint only after.
  await swapDir(staging, target)
  await writeFileAtomic(joinPath(checkpointsDir, LATEST), name + '\n')
  const all = (await listNames(checkpointsDir)).filter((n) => n.startsWith('epoch-'))
  for (const old of all.slice(0, Math.max(0, all.length - keep))) if (old !== name) await remove(joinPath(checkpointsDir, old))
  return target
}

export interface LoadedCheckpoint {
  dir: string
  model: tf.LayersModel
  optimizerWeights: NamedTensor[]
  position: TrainingPosition
}

export async function hasCheckpoint(checkpointsDir: string): Promise<boolean> {
  return exists(joinPath(checkpointsDir, LATEST))
}

export async function loadLatestCheckpoint(checkpointsDir: string): Promise<LoadedCheckpoint> {
  if (!(await hasCheckpoint(checkpointsDir))) {
    throw new UserError(`no checkpoint in ${checkpointsDir}`, {
      code: 'CHECKPOINT_NOT_FOUND',
      exit: 'training',
      suggestions: ['Start a new run without --resume.'],
    })
  }
  const name = (await readText(joinPath(checkpointsDir, LATEST))).trim()
  const dir = joinPath(checkpointsDir, name)
  const model = await loadModel(dir)
  const {entries} = await readJson<{entries: TensorEntry[]}>(joinPath(dir, 'optimizer.json'))
  const optimizerWeights = deserialiseTensors(entries, await readBytes(joinPath(dir, 'optimizer.bin')))
  const position = await readJson<TrainingPosition>(joinPath(dir, 'state.json'))
  return {dir, model, optimizerWeights, position}
}
