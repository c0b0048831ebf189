// Class weights (train.classWeights) for imbalanced data: each example's loss is scaled by its
// class's weight. `auto` is the "balanced" rule of Keras and scikit-learn: n / (classes x count).
import type {MlConfig} from '../config/schema.js'
import {UserError} from '../errors.js'

export type ClassWeightsSetting = MlConfig['train']['classWeights']

/** Weights by class index from counts by class index: n / (k x count), 1 for an empty class. */
export function balancedWeights(counts: readonly number[]): number[] {
  const n = counts.reduce((a, b) => a + b, 0)
  const k = counts.length
  return counts.map((c) => (c > 0 ? n / (k * c) : 1))
}

/** Counts by class index of a label array. */
export function countLabels(labels: Int32Array, numClasses: number): number[] {
  const counts = new Array<number>(numClasses).fill(0)
  for (const label of labels) counts[label] = (counts[label] ?? 0) + 1
  return counts
}

/**
 * The weights a setting stands for, by class index: undefined (no weighting), `auto` from the train
 * split's counts, or a mapping by class name (classes not named weigh 1).
 */
export function resolveClassWeights(setting: ClassWeightsSetting, classes: readonly string[], counts: readonly number[]): number[] | undefined {
  if (setting === undefined) return undefined
  if (setting === 'auto') return balancedWeights(counts)
  if (Array.isArray(setting)) return classes.map((_, i) => setting[i] ?? 1)
  const unknown = Object.keys(setting).filter((name) => !classes.includes(name))
  if (unknown.length) {
    throw new UserError(`train.classWeights names classes the dataset does not have: ${unknown.join(', ')}`, {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      suggestions: [`The classes are: ${classes.join(', ')}.`],
    })
  }
  return classes.map((name) => setting[name] ?? 1)
}
