import assert from 'node:assert/strict'
import {before, describe, it} from 'node:test'
import * as tf from '../../../src/lib/engine/tf.js'
import {initEngine} from '../../../src/lib/engine/backend.js'
import {WASM_TRAINING_KERNELS} from '../../../src/lib/engine/kernels/index.js'
import {seededRandom} from '../../support/random.js'

type Pad = 'same' | 'valid' | number | tf.backend_util.ExplicitPadding
type Rounding = 'floor' | 'round' | 'ceil' | undefined
type Pair = number | [number, number]

interface ConvCase {
  batch: number
  height: number
  width: number
  inChannels: number
  /** Output channels for Conv2D, the channel multiplier for depthwise. */
  outChannels: number
  filter: Pair
  strides: Pair
  pad: Pad
  dilations: number
  dimRoundingMode: Rounding
}

interface PoolCase {
  batch: number
  height: number
  width: number
  channels: number
  filterSize: Pair
  strides: Pair
  pad: Pad
  dimRoundingMode: Rounding
}

interface Result {
  shape: number[]
  values: Float32Array
}

const STRIDES: Pair[] = [1, 2, [1, 2]]
const PADS: Pad[] = ['same', 'valid', 1, [[0, 0], [1, 2], [2, 0], [0, 0]]]
const FILTERS = [1, 2, 3, 5]
const ROUNDING: Rounding[] = ['floor', 'ceil', 'round']

const random = seededRandom

function values(shape: number[], seed: number, integers = false): Float32Array {
  const next = random(seed)
  const out = new Float32Array(shape.reduce((p, d) => p * d, 1))
  for (let i = 0; i < out.length; i++) out[i] = integers ? Math.floor(next() * 4) : next() * 2 - 1
  return out
}

function pair(value: Pair): [number, number] {
  return typeof value === 'number' ? [value, value] : value
}

function describeCase(c: object): string {
  return Object.entries(c)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(' ')
}

function convCases(depthwise: boolean): ConvCase[] {
  const cases: ConvCase[] = []
  let i = 0
  for (const strides of STRIDES) {
    for (const pad of PADS) {
      for (const filter of FILTERS) {
        cases.push({
          batch: i % 2 === 0 ? 1 : 3,
          height: 9,
          width: 11,
          inChannels: [1, 3, 4][i % 3]!,
          // 1 -> 12 channels makes the filter gradient take its patch-matrix route, the others its convolution route.
          outChannels: depthwise ? [1, 2][i % 2]! : [12, 1, 3][i % 3]!,
          filter: filter === 2 ? [2, 3] : filter,
          strides,
          pad,
          dilations: 1,
          dimRoundingMode: typeof pad === 'number' ? ROUNDING[i % 3] : undefined,
        })
        i++
      }
    }
  }
  // Dilated filters: tfjs's own gradients refuse them, but the kernels honour a dilations attr.
  for (const strides of [1, 2]) {
    for (const pad of PADS) {
      for (const filter of [2, 3]) {
        const narrow = filter === 2
        cases.push({
          batch: 3, height: 9, width: 11, inChannels: narrow ? 1 : 3, outChannels: depthwise ? (narrow ? 1 : 2) : (narrow ? 6 : 4),
          filter, strides, pad, dilations: 2, dimRoundingMode: typeof pad === 'number' ? 'ceil' : undefined,
        })
      }
    }
  }
  if (!depthwise) {
    // Several input channels on the patch-matrix route (fh * fw * inChannels < outChannels), as an
    // RGB first layer has: the patch rows interleave channels within each filter tap.
    const variants: Array<[Pair, Pad]> = [[1, 'same'], [2, 'valid'], [[2, 1], 1]]
    for (const [strides, pad] of variants) {
      cases.push({batch: 2, height: 9, width: 11, inChannels: 3, outChannels: 32, filter: 3, strides, pad, dilations: 1, dimRoundingMode: typeof pad === 'number' ? 'floor' : undefined})
    }
  }
  return cases
}

function filterShape(c: ConvCase): [number, number, number, number] {
  const [fh, fw] = pair(c.filter)
  return [fh, fw, c.inChannels, c.outChannels]
}

function convInfo(c: ConvCase, depthwise: boolean): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    [c.batch, c.height, c.width, c.inChannels], filterShape(c), c.strides, c.dilations, c.pad, c.dimRoundingMode, depthwise,
  )
}

/** The filter with zeros between its taps: a dilated convolution as an undilated one, for the cpu reference. */
function dilateFilter(filter: Float32Array, shape: number[], d: number): {values: Float32Array, shape: number[]} {
  const [fh, fw, a, b] = shape as [number, number, number, number]
  const eh = (fh - 1) * d + 1
  const ew = (fw - 1) * d + 1
  const out = new Float32Array(eh * ew * a * b)
  for (let i = 0; i < fh; i++) {
    for (let j = 0; j < fw; j++) {
      out.set(filter.subarray((i * fw + j) * a * b, (i * fw + j + 1) * a * b), (i * d * ew + j * d) * a * b)
    }
  }
  return {values: out, shape: [eh, ew, a, b]}
}

/** Keeps the taps of a gradient over the dilated filter that correspond to real filter taps. */
function undilateGradient(grad: Result, fh: number, fw: number, d: number): Result {
  const [, ew, a, b] = grad.shape as [number, number, number, number]
  const out = new Float32Array(fh * fw * a * b)
  for (let i = 0; i < fh; i++) {
    for (let j = 0; j < fw; j++) {
      const from = (i * d * ew + j * d) * a * b
      out.set(grad.values.subarray(from, from + a * b), (i * fw + j) * a * b)
    }
  }
  return {values: out, shape: [fh, fw, a, b]}
}

async function run(backend: string, kernel: string, inputs: () => Record<string, tf.Tensor>, attrs: object): Promise<Result> {
  await tf.setBackend(backend)
  const out = tf.tidy(() => tf.engine().runKernel(kernel, inputs() as unknown as tf.NamedTensorMap, attrs as tf.NamedAttrMap) as tf.Tensor)
  const result = {shape: out.shape, values: out.dataSync() as Float32Array}
  out.dispose()
  return result
}

/** Undefined when equal within 1e-4 relative to the magnitude, else what differs first. */
function mismatch(got: Result, want: Result, tolerance = 1e-4): string | undefined {
  if (got.shape.join() !== want.shape.join()) return `shape [${got.shape.join(', ')}], expected [${want.shape.join(', ')}]`
  for (let i = 0; i < want.values.length; i++) {
    const w = want.values[i]!
    const g = got.values[i]!
    if (Number.isNaN(w) && Number.isNaN(g)) continue
    if (!(Math.abs(g - w) <= tolerance * Math.max(1, Math.abs(w)))) return `element ${i} is ${g}, expected ${w}`
  }
  return undefined
}

function assertClose(got: Result, want: Result, label: string, tolerance?: number): void {
  const problem = mismatch(got, want, tolerance)
  if (problem !== undefined) assert.fail(`${label}: ${problem}`)
}

function numDataIds(): number {
  return (tf.engine().backend as unknown as {numDataIds(): number}).numDataIds()
}

/** The wasm backend's buffer count is unchanged by each of the calls: intermediates are freed. */
async function assertNoLeaks(kernel: string, calls: Array<{label: string, inputs: () => Record<string, tf.Tensor>, attrs: object}>): Promise<void> {
  await tf.setBackend('wasm')
  const leaky: string[] = []
  for (const call of calls) {
    const before = numDataIds()
    await run('wasm', kernel, call.inputs, call.attrs)
    if (numDataIds() !== before) leaky.push(call.label)
  }
  assert.deepEqual(leaky, [], `${kernel} left buffers behind for these cases`)
}

before(async () => {
  const engine = await initEngine('wasm')
  assert.equal(engine.backend, 'wasm', 'these tests need the wasm backend')
})

describe('wasm training kernels are installed', () => {
  it('registers every kernel for wasm', () => {
    for (const name of WASM_TRAINING_KERNELS) assert.ok(tf.getKernel(name, 'wasm'), `${name} is not registered`)
  })

  it('rejects NCHW with a clear message', async () => {
    const x = () => ({x: tf.zeros([1, 1, 4, 4]), dy: tf.zeros([1, 1, 2, 2])})
    await assert.rejects(run('wasm', 'Conv2DBackpropFilter', x, {strides: 1, pad: 'valid', dataFormat: 'NCHW', filterShape: [3, 3, 1, 1]}), /NHWC/)
  })
})

for (const depthwise of [false, true]) {
  const filterKernel = depthwise ? 'DepthwiseConv2dNativeBackpropFilter' : 'Conv2DBackpropFilter'
  const inputKernel = depthwise ? 'DepthwiseConv2dNativeBackpropInput' : 'Conv2DBackpropInput'
  const cases = convCases(depthwise)

  const filterCall = (c: ConvCase) => {
    const info = convInfo(c, depthwise)
    const xShape = [c.batch, c.height, c.width, c.inChannels]
    return {
      label: describeCase(c),
      inputs: () => ({x: tf.tensor(values(xShape, 1), xShape), dy: tf.tensor(values(info.outShape, 2), info.outShape)}),
      attrs: {strides: c.strides, pad: c.pad, dilations: c.dilations, dimRoundingMode: c.dimRoundingMode, dataFormat: 'NHWC', filterShape: filterShape(c)},
    }
  }
  const inputCall = (c: ConvCase) => {
    const info = convInfo(c, depthwise)
    const fShape = filterShape(c)
    return {
      label: describeCase(c),
      inputs: () => ({dy: tf.tensor(values(info.outShape, 3), info.outShape), filter: tf.tensor(values(fShape, 4), fShape)}),
      attrs: {strides: c.strides, pad: c.pad, dilations: c.dilations, dimRoundingMode: c.dimRoundingMode, dataFormat: 'NHWC', inputShape: info.inShape},
    }
  }

  describe(`${filterKernel} on wasm matches cpu`, () => {
    for (const c of cases) {
      it(describeCase(c), async () => {
        const call = filterCall(c)
        const got = await run('wasm', filterKernel, call.inputs, call.attrs)
        let want: Result
        if (c.dilations === 1) {
          want = await run('cpu', filterKernel, call.inputs, {...call.attrs, dilations: 1})
        } else {
          const [fh, fw] = pair(c.filter)
          const wide = dilateFilter(new Float32Array(fh * fw * c.inChannels * c.outChannels), filterShape(c), c.dilations).shape
          const grad = await run('cpu', filterKernel, call.inputs, {...call.attrs, dilations: 1, filterShape: wide})
          want = undilateGradient(grad, fh, fw, c.dilations)
        }
        assertClose(got, want, `${filterKernel} ${call.label}`)
      })
    }
    it('frees its intermediates', async () => {
      await assertNoLeaks(filterKernel, cases.map(filterCall))
    })
  })

  describe(`${inputKernel} on wasm matches cpu`, () => {
    for (const c of cases) {
      it(describeCase(c), async () => {
        const call = inputCall(c)
        const got = await run('wasm', inputKernel, call.inputs, call.attrs)
        let want: Result
        if (c.dilations === 1) {
          want = await run('cpu', inputKernel, call.inputs, {...call.attrs, dilations: 1})
        } else {
          const fShape = filterShape(c)
          const wide = dilateFilter(values(fShape, 4), fShape, c.dilations)
          const info = convInfo(c, depthwise)
          want = await run('cpu', inputKernel, () => ({
            dy: tf.tensor(values(info.outShape, 3), info.outShape),
            filter: tf.tensor(wide.values, wide.shape),
          }), {...call.attrs, dilations: 1})
        }
        assertClose(got, want, `${inputKernel} ${call.label}`)
      })
    }
    it('frees its intermediates', async () => {
      await assertNoLeaks(inputKernel, cases.map(inputCall))
    })
  })
}

function poolCases(): PoolCase[] {
  const cases: PoolCase[] = []
  let i = 0
  for (const strides of STRIDES) {
    for (const pad of ['same', 'valid', 1] as Pad[]) {
      for (const filterSize of [1, 2, 3, [2, 3]] as Pair[]) {
        if (pad === 1 && filterSize === 1) continue
        cases.push({
          batch: i % 2 === 0 ? 1 : 3,
          height: 9,
          width: 8,
          channels: [1, 3, 4][i % 3]!,
          filterSize,
          strides,
          pad,
          dimRoundingMode: pad === 1 ? ROUNDING[i % 3] : undefined,
        })
        i++
      }
    }
  }
  return cases
}

function poolCall(c: PoolCase, xValues?: Float32Array) {
  const xShape = [c.batch, c.height, c.width, c.channels]
  const info = tf.backend_util.computePool2DInfo(xShape as [number, number, number, number], c.filterSize, c.strides, 1, c.pad, c.dimRoundingMode)
  const attrs = {filterSize: c.filterSize, strides: c.strides, pad: c.pad, dimRoundingMode: c.dimRoundingMode}
  return {
    label: describeCase(c),
    // Small integers make ties common, so the first-maximum rule is exercised.
    inputs: () => {
      const input = tf.tensor(xValues ?? values(xShape, 5, true), xShape)
      const output = tf.engine().runKernel('MaxPool', {x: input}, attrs as unknown as tf.NamedAttrMap) as tf.Tensor
      return {dy: tf.tensor(values(info.outShape, 6), info.outShape), input, output}
    },
    attrs,
  }
}

describe('MaxPoolGrad on wasm matches cpu exactly', () => {
  const cases = poolCases()
  for (const c of cases) {
    it(describeCase(c), async () => {
      const call = poolCall(c)
      assertClose(await run('wasm', 'MaxPoolGrad', call.inputs, call.attrs), await run('cpu', 'MaxPoolGrad', call.inputs, call.attrs), call.label, 1e-6)
    })
  }

  it('treats NaN and infinities as cpu does: no gradient to NaN or all -Infinity windows', async () => {
    const c: PoolCase = {batch: 1, height: 4, width: 4, channels: 2, filterSize: 2, strides: 1, pad: 'valid', dimRoundingMode: undefined}
    const x = values([1, 4, 4, 2], 7, true)
    for (const i of [0, 1, 2, 3, 8, 9]) x[i] = Number.NaN
    for (const i of [10, 11, 18, 19]) x[i] = -Infinity
    for (const i of [4, 13, 22, 23, 30]) x[i] = Infinity
    const call = poolCall(c, x)
    assertClose(await run('wasm', 'MaxPoolGrad', call.inputs, call.attrs), await run('cpu', 'MaxPoolGrad', call.inputs, call.attrs), 'NaN/-Infinity windows', 1e-6)
  })

  it('frees its intermediates', async () => {
    await assertNoLeaks('MaxPoolGrad', cases.map((c) => poolCall(c)))
  })
})

describe('BatchMatMul, Sum and Identity on wasm match cpu', () => {
  const matmuls: Array<{a: number[], b: number[], transposeA: boolean, transposeB: boolean}> = []
  for (const transposeA of [false, true]) {
    for (const transposeB of [false, true]) {
      const m = 5
      const k = 7
      const n = 4
      for (const batch of [[], [1], [2]]) {
        matmuls.push({
          a: [...batch, ...(transposeA ? [k, m] : [m, k])],
          b: [...batch, ...(transposeB ? [n, k] : [k, n])],
          transposeA,
          transposeB,
        })
      }
    }
  }
  for (const c of matmuls) {
    it(`BatchMatMul ${describeCase(c)}`, async () => {
      const inputs = () => ({a: tf.tensor(values(c.a, 8), c.a), b: tf.tensor(values(c.b, 9), c.b)})
      const attrs = {transposeA: c.transposeA, transposeB: c.transposeB}
      assertClose(await run('wasm', 'BatchMatMul', inputs, attrs), await run('cpu', 'BatchMatMul', inputs, attrs), describeCase(c))
    })
  }

  const shape = [3, 4, 5, 6]
  for (const axis of [[0], [0, 1], [1, 0, 2], [1], [3], [1, 2], [0, 1, 2, 3]]) {
    for (const keepDims of [false, true]) {
      it(`Sum axis=${JSON.stringify(axis)} keepDims=${keepDims}`, async () => {
        const inputs = () => ({x: tf.tensor(values(shape, 10), shape)})
        const attrs = {axis, keepDims}
        assertClose(await run('wasm', 'Sum', inputs, attrs), await run('cpu', 'Sum', inputs, attrs), `axis ${JSON.stringify(axis)}`)
      })
    }
  }

  it('Identity shares the buffer and outlives its source', async () => {
    await tf.setBackend('wasm')
    const source = tf.tensor([1, 2, 3])
    const before = numDataIds()
    const copy = tf.clone(source)
    assert.equal(numDataIds(), before, 'clone allocated a buffer')
    source.dispose()
    assert.deepEqual([...copy.dataSync()], [1, 2, 3])
    copy.dispose()
    assert.equal(numDataIds(), before - 1, 'buffer not freed with its last tensor')
  })
})

function smallCnn(): tf.LayersModel {
  const seed = (n: number) => tf.initializers.glorotUniform({seed: n})
  const model = tf.sequential()
  model.add(tf.layers.depthwiseConv2d({inputShape: [12, 12, 3], kernelSize: 3, depthMultiplier: 2, padding: 'same', activation: 'relu', depthwiseInitializer: seed(1)}))
  model.add(tf.layers.separableConv2d({filters: 6, kernelSize: 3, strides: 2, padding: 'valid', activation: 'relu', depthwiseInitializer: seed(2), pointwiseInitializer: seed(3)}))
  model.add(tf.layers.conv2d({filters: 8, kernelSize: 2, activation: 'relu', kernelInitializer: seed(4)}))
  model.add(tf.layers.maxPooling2d({poolSize: 2}))
  model.add(tf.layers.flatten())
  model.add(tf.layers.dense({units: 3, activation: 'softmax', kernelInitializer: seed(5)}))
  model.compile({optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy'})
  return model
}

function smallBatch(): {x: tf.Tensor, y: tf.Tensor} {
  const x = tf.tensor(values([8, 12, 12, 3], 11), [8, 12, 12, 3])
  const y = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2, 0, 1], 'int32'), 3).toFloat()
  return {x, y}
}

describe('a CNN with depthwise and separable convolutions on wasm', () => {
  it('has the same gradients as on cpu', async () => {
    await tf.setBackend('wasm')
    const model = smallCnn()
    const {x, y} = smallBatch()
    const lossOf = () => tf.losses.softmaxCrossEntropy(y, model.apply(x) as tf.Tensor) as tf.Scalar
    const gradsOn = async (backend: string): Promise<Map<string, Result>> => {
      await tf.setBackend(backend)
      const {value, grads} = tf.variableGrads(lossOf)
      const out = new Map<string, Result>()
      for (const [name, g] of Object.entries(grads)) out.set(name, {shape: g.shape, values: g.dataSync() as Float32Array})
      tf.dispose([value, ...Object.values(grads)])
      return out
    }
    const wasm = await gradsOn('wasm')
    const cpu = await gradsOn('cpu')
    await tf.setBackend('wasm')
    assert.equal(wasm.size, model.trainableWeights.length)
    for (const [name, want] of cpu) assertClose(wasm.get(name)!, want, `gradient of ${name}`, 1e-3)
    tf.dispose([x, y])
    model.dispose()
  })

  it('trains: the loss falls over a few steps', async () => {
    await tf.setBackend('wasm')
    const model = smallCnn()
    const {x, y} = smallBatch()
    const losses: number[] = []
    for (let step = 0; step < 15; step++) losses.push(await model.trainOnBatch(x, y) as number)
    assert.ok(losses.every(Number.isFinite), `non-finite loss: ${losses.join(', ')}`)
    assert.ok(losses.at(-1)! < losses[0]! * 0.8, `loss did not fall: ${losses.join(', ')}`)
    tf.dispose([x, y])
    model.dispose()
  })

  it('leaks no tensors or wasm buffers across training steps', async () => {
    await tf.setBackend('wasm')
    const model = smallCnn()
    const {x, y} = smallBatch()
    await model.trainOnBatch(x, y)
    const tensors = tf.memory().numTensors
    const buffers = numDataIds()
    for (let step = 0; step < 4; step++) await model.trainOnBatch(x, y)
    assert.equal(tf.memory().numTensors, tensors, 'tensor count grew')
    assert.equal(numDataIds(), buffers, 'wasm buffer count grew')
    tf.dispose([x, y])
    model.dispose()
  })
})
