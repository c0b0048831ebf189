// Drift statistics against hand-computed values (PSI, the chi-square survival function, priors) and
// the per-image statistics the server records (size from the header, brightness, top-1 class).
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {chiSquareTest, classPriors, gammaQ, logGamma, populationStabilityIndex, predictionDrift} from '../../../src/lib/monitor/drift.js'
import {imageSize, meanBrightness, topClasses} from '../../../src/lib/serve/input-stats.js'

function near(actual: number, expected: number, tolerance = 1e-9): void {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${actual} is not within ${tolerance} of ${expected}`)
}

describe('drift statistics', () => {
  it('PSI is sum((o - e) * ln(o / e))', () => {
    // 0.1 * ln(1.2) + (-0.1) * ln(0.8)
    near(populationStabilityIndex([0.5, 0.5], [0.6, 0.4]), 0.1 * Math.log(1.2) - 0.1 * Math.log(0.8))
    near(populationStabilityIndex([0.5, 0.5], [0.6, 0.4]), 0.040546510810816, 1e-12)
    assert.equal(populationStabilityIndex([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]), 0)
    // A class never predicted is raised to 1e-4 instead of making PSI infinite.
    const psi = populationStabilityIndex([0.5, 0.5], [1, 0])
    assert.ok(Number.isFinite(psi) && psi > 2, `psi ${psi}`)
  })

  it('logGamma and the regularised upper incomplete gamma match known values', () => {
    near(logGamma(1), 0, 1e-13)
    near(logGamma(5), Math.log(24), 1e-12)
    near(logGamma(0.5), Math.log(Math.sqrt(Math.PI)), 1e-12)
    // Q(1, x) = e^-x.
    near(gammaQ(1, 2), Math.exp(-2), 1e-13)
    near(gammaQ(1, 0.3), Math.exp(-0.3), 1e-13)
  })

  it('chi-square p-values match the table', () => {
    // 2 degrees of freedom: p = e^(-x/2).
    const counts = [30, 50, 20]
    const expected = [1 / 3, 1 / 3, 1 / 3]
    const t = chiSquareTest(counts, expected)
    // ((30-33.3)^2 + (50-33.3)^2 + (20-33.3)^2) / 33.3 = 14
    near(t.statistic, 14, 1e-9)
    assert.equal(t.dof, 2)
    near(t.pValue, Math.exp(-7), 1e-12)
    // Critical values at 5%: 3.841 (1 dof), 18.307 (10 dof).
    near(gammaQ(0.5, 3.841458820694124 / 2), 0.05, 1e-9)
    near(gammaQ(5, 18.307038053275146 / 2), 0.05, 1e-9)
  })

  it('class priors come from the manifest counts of the train split', () => {
    const priors = classPriors({classes: ['a', 'b', 'c'], counts: {train: {a: 50, b: 30, c: 20}, validation: {a: 1, b: 1, c: 1}, test: {a: 9, b: 0, c: 0}}})
    assert.deepEqual(priors, {a: 0.5, b: 0.3, c: 0.2})
    assert.deepEqual(classPriors({classes: ['x', 'y'], counts: {train: {}, validation: {}, test: {}}}), {x: 0.5, y: 0.5})
  })

  it('predictionDrift compares predicted counts with the priors and names unknown classes', () => {
    const d = predictionDrift({a: 0.5, b: 0.5}, {a: 60, b: 40, zebra: 3})
    assert.equal(d.samples, 103)
    near(d.psi!, 0.040546510810816, 1e-12)
    assert.deepEqual(d.unknownClasses, ['zebra'])
    assert.deepEqual(d.classes.map((c) => [c.class, c.count, c.observed]), [['a', 60, 0.6], ['b', 40, 0.4]])
    const none = predictionDrift({a: 0.5, b: 0.5}, {})
    assert.equal(none.psi, null)
    assert.equal(none.samples, 0)
  })
})

describe('input statistics the server records', () => {
  it('reads the size from PNG, JPEG, WebP and GIF headers without decoding', async () => {
    const sharp = (await import('sharp')).default
    const image = sharp({create: {width: 37, height: 23, channels: 3, background: '#808080'}})
    for (const format of ['png', 'jpeg', 'webp', 'gif'] as const) {
      const bytes = await image.clone().toFormat(format).toBuffer()
      assert.deepEqual(imageSize(bytes), {width: 37, height: 23}, format)
    }
    const lossless = await image.clone().webp({lossless: true}).toBuffer()
    assert.deepEqual(imageSize(lossless), {width: 37, height: 23}, 'lossless webp')
    assert.equal(imageSize(Buffer.from('not an image')), undefined)
    assert.equal(imageSize(Buffer.alloc(0)), undefined)
  })

  it('brightness undoes the model scaling; top classes take the first of ties', () => {
    near(meanBrightness(new Float32Array([0, 1, 0.5, 0.5]), 1 / 255, 0), 0.5, 1e-7)
    near(meanBrightness(new Float32Array([-1, 1]), 2 / 255, -1), 0.5, 1e-7)
    assert.deepEqual(topClasses(new Float32Array([0.1, 0.7, 0.2, 0.5, 0.5, 0]), 2, 3), [1, 0])
  })
})
