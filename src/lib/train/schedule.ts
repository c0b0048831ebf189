// Learning-rate schedules (train.schedule): a pure function of the position in training, so that a
// resumed or data-parallel run uses exactly the rate an uninterrupted single-process one would.
import type * as tf from '../engine/tf.js'
import type {MlConfig} from '../config/schema.js'
import {stepsPerEpoch} from './pipeline.js'

type TrainConfig = MlConfig['train']

/**
 * The learning rate for step `step` (0-based, within the epoch) of epoch `epoch` (0-based): a linear
 * warm-up over schedule.warmupEpochs, then constant, step (x gamma every stepEpochs), exponential
 * (x gamma per epoch) or cosine decay to minLearningRate at the last epoch.
 */
export function learningRateAt(train: TrainConfig, epoch: number, step: number, steps: number): number {
  const base = train.learningRate
  const s = train.schedule
  if (!s) return base
  const t = epoch + step / Math.max(1, steps)
  const warmup = s.warmupEpochs
  // Linear warm-up: the first step already moves (never a rate of 0), the last reaches base.
  if (t < warmup) return (base * (epoch * steps + step + 1)) / Math.max(1, Math.round(warmup * steps))
  const after = t - warmup
  switch (s.type) {
    case 'constant':
      return base
    case 'step':
      return base * s.gamma ** Math.floor(after / s.stepEpochs + 1e-9)
    case 'exponential':
      return base * s.gamma ** after
    case 'cosine': {
      const span = Math.max(1e-9, train.epochs - warmup)
      const progress = Math.min(1, after / span)
      return s.minLearningRate + (base - s.minLearningRate) * 0.5 * (1 + Math.cos(Math.PI * progress))
    }
  }
}

/** The rate for a global step of a split of `trainCount` examples. */
export function learningRateFor(train: TrainConfig, epoch: number, step: number, trainCount: number): number {
  return learningRateAt(train, epoch, step, stepsPerEpoch(trainCount, train.batchSize))
}

/**
 * Sets an optimizer's learning rate: SGD and momentum cache it as a tensor (setLearningRate); Adam,
 * RMSProp and Adagrad read the `learningRate` field at every update.
 */
export function setLearningRate(optimizer: tf.Optimizer, rate: number): void {
  const o = optimizer as unknown as {learningRate: number; setLearningRate?: (lr: number) => void}
  if (o.learningRate === rate) return
  if (typeof o.setLearningRate === 'function') o.setLearningRate(rate)
  else o.learningRate = rate
}
