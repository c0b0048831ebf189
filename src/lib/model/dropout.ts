// Dropout whose masks depend only on (seed, epoch, step, layer, example index), not on how a batch
// is split across data-parallel workers: one worker with batch B and N workers with B/N each draw
// exactly the same masks, so they train to the same weights. It keeps the class name 'Dropout' and
// the stock config, so saved models load anywhere as an ordinary tf.layers Dropout.
import * as tf from '../engine/tf.js'
import seedrandom from 'seedrandom'

/** Where in training the current step is; set by the trainer around each step. */
export interface DropoutContext {
  seed: number
  epoch: number
  step: number
  /** Index, within the global batch, of this process's first example. */
  rowOffset: number
}

let context: DropoutContext | undefined

export function withDropoutContext<T>(ctx: DropoutContext, fn: () => T): T {
  const previous = context
  context = ctx
  try {
    return fn()
  } finally {
    context = previous
  }
}

type LayerClass = new (args: {rate: number; noiseShape?: number[]; seed?: number; name?: string}) => tf.layers.Layer
const StockDropout = tf.layers.dropout({rate: 0}).constructor as LayerClass

/** One row's keep-mask scaled by 1/(1-rate), drawn from a generator keyed by the row's identity. */
function fillRowMask(out: Float32Array, at: number, size: number, rate: number, key: string): void {
  const rng = seedrandom.alea(key)
  const scale = 1 / (1 - rate)
  for (let i = 0; i < size; i++) out[at + i] = rng() >= rate ? scale : 0
}

export class SeededDropout extends StockDropout {
  static className = 'Dropout'

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[] {
    const rate = (this as unknown as {rate: number}).rate
    const noiseShape = (this as unknown as {noiseShape?: number[]}).noiseShape
    // Outside the trainer's steps (or with a custom noise shape) behave exactly like the stock layer.
    if (!context || !kwargs.training || rate <= 0 || noiseShape) return super.call(inputs, kwargs)
    const ctx = context
    return tf.tidy(() => {
      const input = Array.isArray(inputs) ? inputs[0]! : inputs
      const rows = input.shape[0]!
      const rowSize = input.size / Math.max(rows, 1)
      const mask = new Float32Array(input.size)
      for (let r = 0; r < rows; r++) {
        fillRowMask(mask, r * rowSize, rowSize, rate, `${ctx.seed}:dropout:${ctx.epoch}:${ctx.step}:${this.name}:${ctx.rowOffset + r}`)
      }
      return tf.mul(input, tf.tensor(mask, input.shape, 'float32'))
    })
  }
}

tf.serialization.registerClass(SeededDropout as unknown as tf.serialization.SerializableConstructor<tf.serialization.Serializable>)

export function seededDropout(args: {rate: number; name?: string}): tf.layers.Layer {
  return new SeededDropout(args)
}
