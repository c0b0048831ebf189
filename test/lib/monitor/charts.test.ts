// SVG charts rasterised by sharp: sizes as declared, the drawing really lands in the pixels, labels
// escaped, and tick values round.
import assert from 'node:assert/strict'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import sharp from 'sharp'
import {barChartSvg, confusionMatrixSvg, escapeXml, imageGridSvg, niceTicks, trainingCurvesSvg, writeSvgPng} from '../../../src/lib/monitor/charts.js'
import {tempDir} from '../../support/fixtures.js'

/** RGB of one pixel of a PNG file. */
async function pixel(file: string, x: number, y: number): Promise<[number, number, number]> {
  const {data, info} = await sharp(file).removeAlpha().raw().toBuffer({resolveWithObject: true})
  const i = (y * info.width + x) * info.channels
  return [data[i]!, data[i + 1]!, data[i + 2]!]
}

describe('charts', () => {
  let dir: string
  let cleanup: () => Promise<void>
  before(async () => ({dir, cleanup} = await tempDir('ml-charts-')))
  after(() => cleanup())

  it('picks round ticks', () => {
    assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1])
    assert.deepEqual(niceTicks(0.43, 0.95), [0.4, 0.6, 0.8, 1], 'range 0.52 / 5 = 0.104: step 0.2')
    assert.deepEqual(niceTicks(1, 7, 3), [0, 2, 4, 6, 8])
    assert.deepEqual(niceTicks(5, 5), [4.4, 4.6, 4.8, 5, 5.2, 5.4, 5.6], 'a flat series gets a range around it')
  })

  it('ticks always cover the data: the last tick is at or above the maximum', () => {
    // Validation accuracy 0.9746 on an axis that started at 0.75 used to end at 0.95.
    const ticks = niceTicks(0.75, 0.9746)
    assert.ok(ticks.at(-1)! >= 0.9746, ticks.join(', '))
    let seed = 7
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
    for (let i = 0; i < 2000; i++) {
      const a = random() * 10 - 5
      const b = a + random() * 10 ** (random() * 6 - 3)
      for (const target of [3, 5, 8]) {
        const t = niceTicks(a, b, target)
        assert.ok(t[0]! <= a + 1e-12 && t.at(-1)! >= b - 1e-12, `[${a}, ${b}] target ${target}: ${t.join(', ')}`)
      }
    }
  })

  it('training curves: a 1000x420 PNG with the train curve drawn in its colour', async () => {
    const metrics = [1, 2, 3, 4, 5].map((epoch) => ({epoch, loss: 2 / epoch, accuracy: 1 - 0.4 / epoch, valLoss: 2.2 / epoch, valAccuracy: 1 - 0.45 / epoch}))
    const file = path.join(dir, 'curves.png')
    const written = await writeSvgPng(trainingCurvesSvg(metrics, 'Training of <run & co>'), file)
    assert.deepEqual([written.width, written.height], [1000, 420])
    const meta = await sharp(file).metadata()
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 1000, 420])
    // The loss axis runs from 0 to 2.5, above the largest value (validation loss 2.2): the first train
    // point (2.0) sits a fifth of the 300-pixel plot height below its top (x = 68, y = 34 + 36 + 60).
    const [r, g, b] = await pixel(file, 68, 130)
    assert.ok(b > 150 && r < 100, `expected the train blue at the first point, got ${r},${g},${b}`)
    const stats = await sharp(file).stats()
    assert.ok(stats.channels[0]!.min < 50, 'there is dark text and axes')
  })

  it('confusion matrix, bars and image grid decode at their declared sizes', async () => {
    const labels = ['cat', 'dog', 'a<b&c']
    const cm = confusionMatrixSvg([[5, 1, 0], [2, 7, 1], [0, 0, 9]], labels, 'Confusion')
    assert.match(cm.svg, /a&lt;b&amp;c/)
    const cmFile = path.join(dir, 'cm.png')
    assert.deepEqual(await writeSvgPng(cm.svg, cmFile).then((w) => [w.width, w.height]), [cm.width, cm.height])
    const bars = barChartSvg({title: 'Per class', labels, values: [0.83, 0.7, 1], xLabel: 'class', yLabel: 'recall', reference: {value: 0.84, label: 'overall'}})
    const barFile = path.join(dir, 'bars.png')
    assert.deepEqual(await writeSvgPng(bars.svg, barFile).then((w) => [w.width, w.height]), [bars.width, bars.height])
    const white = await sharp({create: {width: 8, height: 8, channels: 3, background: '#ffffff'}}).png().toBuffer()
    const grid = imageGridSvg({title: 'Mistakes', images: [{png: white, caption: '3 → 5'}, {png: white, caption: '1 → 7', detail: 'p = 0.9'}], columns: 8, tile: 40})
    const gridFile = path.join(dir, 'grid.png')
    const written = await writeSvgPng(grid.svg, gridFile)
    assert.deepEqual([written.width, written.height], [grid.width, grid.height])
    // The embedded image is drawn: the tile centre is white on a white page, so look at the dark
    // border rectangle around it instead, and at the tile centre against a black image.
    const black = await sharp({create: {width: 8, height: 8, channels: 3, background: '#000000'}}).png().toBuffer()
    const dark = imageGridSvg({title: 'x', images: [{png: black, caption: 'c'}], columns: 1, tile: 40})
    const darkFile = path.join(dir, 'dark.png')
    await writeSvgPng(dark.svg, darkFile)
    assert.deepEqual(await pixel(darkFile, 12 + 20, 46 + 20), [0, 0, 0], 'the embedded PNG is rasterised into its tile')
    assert.equal(escapeXml(`"it's"`), '&quot;it&apos;s&quot;')
  })
})
