// Charts as hand-built SVG strings (line charts, a confusion-matrix heatmap, bars, an image grid),
// rasterised to PNG by sharp (librsvg): no chart library, and identical pictures on every machine.
import sharp from 'sharp'

export const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif'
export const COLOURS = {train: '#1f77b4', validation: '#ff7f0e', bar: '#4c72b0', good: '#2ca02c', bad: '#d62728', grid: '#e6e6e6', axis: '#333333', text: '#222222', muted: '#666666'}

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;'})[c]!)
}

const num = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(2))

function text(x: number, y: number, content: string, attrs: Record<string, string | number> = {}): string {
  const a = Object.entries({'font-family': FONT, 'font-size': 12, fill: COLOURS.text, ...attrs})
    .map(([k, v]) => `${k}="${typeof v === 'number' ? num(v) : escapeXml(v)}"`)
    .join(' ')
  return `<text x="${num(x)}" y="${num(y)}" ${a}>${escapeXml(content)}</text>`
}

export function svgDocument(width: number, height: number, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><rect width="100%" height="100%" fill="#ffffff"/>${body}</svg>`
}

/** Round tick values covering [min, max]: steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(min: number, max: number, target = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return []
  if (max === min) {
    const pad = Math.abs(max) > 0 ? Math.abs(max) * 0.1 : 1
    min -= pad
    max += pad
  }
  const raw = (max - min) / target
  const power = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power
  const first = Math.floor(min / step + 1e-9)
  // The last tick is the first at or above max, so that the axis never cuts the data off.
  const last = Math.max(first + 1, Math.ceil(max / step - 1e-9))
  const ticks: number[] = []
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)))
  return ticks
}

export interface LineSeries {
  name: string
  /** [x, y]; non-finite y values break the line. */
  points: Array<[number, number]>
  colour: string
  dashed?: boolean
}

export interface LineChartOptions {
  title: string
  xLabel: string
  yLabel: string
  series: LineSeries[]
  width: number
  height: number
  /** Offset of the chart inside a larger document. */
  x?: number
  y?: number
  yFormat?: (v: number) => string
  /** Integer x ticks only (epochs). */
  integerX?: boolean
  yRange?: [number, number]
}

/** A line chart as an SVG group: axes with ticks and grid, title, axis labels, markers and a legend. */
export function lineChart(o: LineChartOptions): string {
  const ox = o.x ?? 0
  const oy = o.y ?? 0
  const m = {left: 68, right: 16, top: 36, bottom: 50}
  const pw = o.width - m.left - m.right
  const ph = o.height - m.top - m.bottom
  const xs = o.series.flatMap((s) => s.points.map((p) => p[0]))
  const ys = o.series.flatMap((s) => s.points.map((p) => p[1]).filter(Number.isFinite))
  const parts: string[] = [text(ox + o.width / 2, oy + 22, o.title, {'text-anchor': 'middle', 'font-size': 15, 'font-weight': 'bold'})]
  if (xs.length === 0 || ys.length === 0) {
    parts.push(text(ox + o.width / 2, oy + o.height / 2, 'no data', {'text-anchor': 'middle', fill: COLOURS.muted}))
    return `<g>${parts.join('')}</g>`
  }
  let xMin = Math.min(...xs)
  let xMax = Math.max(...xs)
  if (xMin === xMax) {
    xMin -= 1
    xMax += 1
  }
  let xTicks = niceTicks(xMin, xMax, Math.min(10, Math.max(2, Math.round(pw / 80))))
  if (o.integerX) xTicks = [...new Set(xTicks.map(Math.round))].filter((t) => t >= xMin && t <= xMax)
  else xTicks = xTicks.filter((t) => t >= xMin - 1e-9 && t <= xMax + 1e-9)
  const yTicks = niceTicks(o.yRange?.[0] ?? Math.min(...ys), o.yRange?.[1] ?? Math.max(...ys), 5)
  const yMin = Math.min(yTicks[0]!, o.yRange?.[0] ?? Infinity)
  const yMax = Math.max(yTicks.at(-1)!, o.yRange?.[1] ?? -Infinity)
  const px = (x: number) => ox + m.left + ((x - xMin) / (xMax - xMin)) * pw
  const py = (y: number) => oy + m.top + ph - ((y - yMin) / (yMax - yMin || 1)) * ph
  const fmtY = o.yFormat ?? ((v: number) => String(Number(v.toPrecision(4))))
  for (const t of yTicks) {
    parts.push(`<line x1="${num(px(xMin))}" x2="${num(px(xMax))}" y1="${num(py(t))}" y2="${num(py(t))}" stroke="${COLOURS.grid}"/>`)
    parts.push(text(px(xMin) - 8, py(t) + 4, fmtY(t), {'text-anchor': 'end', 'font-size': 11}))
  }
  for (const t of xTicks) {
    parts.push(`<line x1="${num(px(t))}" x2="${num(px(t))}" y1="${num(py(yMin))}" y2="${num(py(yMin) + 5)}" stroke="${COLOURS.axis}"/>`)
    parts.push(text(px(t), py(yMin) + 18, String(Number(t.toPrecision(6))), {'text-anchor': 'middle', 'font-size': 11}))
  }
  parts.push(`<rect x="${num(px(xMin))}" y="${num(py(yMax))}" width="${num(pw)}" height="${num(ph)}" fill="none" stroke="${COLOURS.axis}"/>`)
  parts.push(text(ox + m.left + pw / 2, oy + o.height - 10, o.xLabel, {'text-anchor': 'middle', 'font-size': 12}))
  const ly = oy + m.top + ph / 2
  parts.push(text(ox + 16, ly, o.yLabel, {'text-anchor': 'middle', 'font-size': 12, transform: `rotate(-90 ${num(ox + 16)} ${num(ly)})`}))
  for (const s of o.series) {
    let d = ''
    let pen = false
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y)) {
        pen = false
        continue
      }
      d += `${pen ? 'L' : 'M'}${num(px(x))},${num(py(y))}`
      pen = true
    }
    if (d) parts.push(`<path d="${d}" fill="none" stroke="${s.colour}" stroke-width="2.2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`)
    if (s.points.length <= 60) {
      for (const [x, y] of s.points) if (Number.isFinite(y)) parts.push(`<circle cx="${num(px(x))}" cy="${num(py(y))}" r="3" fill="${s.colour}"/>`)
    }
  }
  // Legend in the top-right corner of the plot, on a white box so that curves do not hide it.
  const named = o.series.filter((s) => s.points.some((p) => Number.isFinite(p[1])))
  if (named.length > 0) {
    const lw = 24 + Math.max(...named.map((s) => s.name.length)) * 7 + 16
    const lh = named.length * 18 + 8
    // The corner whose box covers the fewest points (curves falling or rising leave one free).
    const corners = [
      [px(xMax) - lw - 8, py(yMax) + 8],
      [px(xMax) - lw - 8, py(yMin) - lh - 8],
      [px(xMin) + 8, py(yMax) + 8],
      [px(xMin) + 8, py(yMin) - lh - 8],
    ] as const
    // The curves sampled along their segments, in pixels: a line crossing the box counts, not only its markers.
    const samples: Array<[number, number]> = []
    for (const s of o.series) {
      const pts = s.points.filter((p) => Number.isFinite(p[1])).map(([a, b]) => [px(a), py(b)] as const)
      pts.forEach((p, i) => {
        const q = pts[i + 1]
        if (!q) return void samples.push([p[0], p[1]])
        for (let k = 0; k < 24; k++) samples.push([p[0] + ((q[0] - p[0]) * k) / 24, p[1] + ((q[1] - p[1]) * k) / 24])
      })
    }
    const covered = (x: number, y: number) => samples.filter(([a, b]) => a >= x - 6 && a <= x + lw + 6 && b >= y - 6 && b <= y + lh + 6).length
    const [lx, lyTop] = corners.reduce((best, c) => (covered(c[0], c[1]) < covered(best[0], best[1]) ? c : best))
    parts.push(`<rect x="${num(lx)}" y="${num(lyTop)}" width="${num(lw)}" height="${lh}" fill="#ffffff" fill-opacity="0.9" stroke="#cccccc"/>`)
    named.forEach((s, i) => {
      const y = lyTop + 16 + i * 18
      parts.push(`<line x1="${num(lx + 8)}" x2="${num(lx + 28)}" y1="${num(y - 4)}" y2="${num(y - 4)}" stroke="${s.colour}" stroke-width="2.2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`)
      parts.push(text(lx + 34, y, s.name, {'font-size': 11}))
    })
  }
  return `<g>${parts.join('')}</g>`
}

export interface EpochPoint {
  epoch: number
  loss: number
  accuracy: number
  valLoss?: number
  valAccuracy?: number
}

const pct = (v: number) => `${Number((v * 100).toPrecision(3))}%`

/** Loss and accuracy per epoch, train and validation, side by side. */
export function trainingCurvesSvg(metrics: readonly EpochPoint[], title: string, width = 1000, height = 420): string {
  const half = width / 2
  const top = 34
  const series = (key: 'loss' | 'accuracy', valKey: 'valLoss' | 'valAccuracy'): LineSeries[] => [
    {name: 'train', colour: COLOURS.train, points: metrics.map((m) => [m.epoch, m[key]])},
    {name: 'validation', colour: COLOURS.validation, dashed: true, points: metrics.map((m) => [m.epoch, m[valKey] ?? Number.NaN])},
  ]
  const body = [
    text(width / 2, 22, title, {'text-anchor': 'middle', 'font-size': 16, 'font-weight': 'bold'}),
    lineChart({title: 'Loss', xLabel: 'epoch', yLabel: 'cross-entropy loss', series: series('loss', 'valLoss'), width: half, height: height - top, y: top, integerX: true}),
    lineChart({title: 'Accuracy', xLabel: 'epoch', yLabel: 'accuracy', series: series('accuracy', 'valAccuracy'), width: half, height: height - top, x: half, y: top, integerX: true, yFormat: pct}),
  ]
  return svgDocument(width, height, body.join(''))
}

/** Sequential white-to-blue colour for a share in [0, 1]. */
function blues(share: number): string {
  const s = Math.min(1, Math.max(0, share))
  const from = [247, 251, 255]
  const to = [8, 48, 107]
  const c = from.map((f, i) => Math.round(f + (to[i]! - f) * Math.sqrt(s)))
  return `rgb(${c.join(',')})`
}

/**
 * The confusion matrix as a heatmap: rows are true classes, columns predictions, colour the share of
 * the row (recall on the diagonal), each cell annotated with its count when there is room.
 */
export function confusionMatrixSvg(matrix: readonly (readonly number[])[], labels: readonly string[], title: string): {svg: string; width: number; height: number} {
  const k = labels.length
  const cell = Math.max(8, Math.min(48, Math.floor(640 / Math.max(1, k))))
  const labelWidth = Math.min(160, 18 + Math.max(...labels.map((l) => l.length)) * 7)
  const left = 40 + labelWidth
  // Rotated column labels (many classes) need room above the matrix.
  const top = 84 + (k > 12 ? Math.min(100, Math.max(...labels.map((l) => l.length)) * 6) : 0)
  const legendWidth = 90
  const width = left + k * cell + 30 + legendWidth
  const height = top + k * cell + 24
  const parts = [text(width / 2, 26, title, {'text-anchor': 'middle', 'font-size': 16, 'font-weight': 'bold'})]
  parts.push(text(left + (k * cell) / 2, top - (k > 12 ? top - 56 : 30), 'predicted class', {'text-anchor': 'middle', 'font-size': 13}))
  const midY = top + (k * cell) / 2
  parts.push(text(16, midY, 'true class', {'text-anchor': 'middle', 'font-size': 13, transform: `rotate(-90 16 ${midY})`}))
  const fontSize = Math.min(13, Math.max(7, cell / 3.2))
  const showCounts = cell >= 18
  for (let r = 0; r < k; r++) {
    const row = matrix[r] ?? []
    const total = row.reduce((a, b) => a + b, 0)
    parts.push(text(left - 8, top + r * cell + cell / 2 + 4, labels[r]!, {'text-anchor': 'end', 'font-size': Math.min(12, Math.max(7, cell / 2.2))}))
    for (let c = 0; c < k; c++) {
      const count = row[c] ?? 0
      const share = total > 0 ? count / total : 0
      const x = left + c * cell
      const y = top + r * cell
      parts.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${blues(share)}" stroke="#ffffff" stroke-width="1"/>`)
      if (r === c) parts.push(`<rect x="${x + 1}" y="${y + 1}" width="${cell - 2}" height="${cell - 2}" fill="none" stroke="${COLOURS.good}" stroke-width="1.5"/>`)
      if (showCounts && count > 0) parts.push(text(x + cell / 2, y + cell / 2 + fontSize / 3, String(count), {'text-anchor': 'middle', 'font-size': fontSize, fill: share > 0.45 ? '#ffffff' : COLOURS.text}))
    }
  }
  for (let c = 0; c < k; c++) {
    const x = left + c * cell + cell / 2
    const y = top - 8
    parts.push(text(x, y, labels[c]!, {'text-anchor': k > 12 ? 'start' : 'middle', 'font-size': Math.min(12, Math.max(7, cell / 2.2)), ...(k > 12 ? {transform: `rotate(-60 ${x} ${y})`} : {})}))
  }
  // Colour scale.
  const lx = left + k * cell + 30
  const steps = 20
  const lh = Math.min(200, k * cell)
  parts.push(text(lx, top - 8, 'share of row', {'font-size': 11}))
  for (let i = 0; i < steps; i++) parts.push(`<rect x="${lx}" y="${num(top + (i * lh) / steps)}" width="16" height="${num(lh / steps + 0.5)}" fill="${blues(1 - i / (steps - 1))}"/>`)
  parts.push(`<rect x="${lx}" y="${top}" width="16" height="${lh}" fill="none" stroke="#999999"/>`)
  parts.push(text(lx + 22, top + 10, '100%', {'font-size': 11}), text(lx + 22, top + lh, '0%', {'font-size': 11}))
  return {svg: svgDocument(width, height, parts.join('')), width, height}
}

/** Vertical bars of values in [0, 1] with their percentages, and an optional reference line. */
export function barChartSvg(o: {title: string; labels: readonly string[]; values: readonly number[]; yLabel: string; xLabel: string; reference?: {value: number; label: string}; counts?: readonly number[]}): {svg: string; width: number; height: number} {
  const k = o.labels.length
  const barWidth = Math.max(6, Math.min(56, Math.floor(760 / Math.max(1, k))))
  // Many classes: labels are rotated and need height below the axis.
  const bottom = k > 16 ? 44 + Math.min(120, Math.max(...o.labels.map((l) => l.length)) * 5.5) : 70
  const m = {left: 70, right: o.reference ? 120 : 24, top: 50, bottom}
  const pw = k * barWidth
  const ph = 300
  const width = Math.max(480, m.left + pw + m.right)
  const height = m.top + ph + m.bottom
  const py = (v: number) => m.top + ph - v * ph
  const parts = [text(width / 2, 28, o.title, {'text-anchor': 'middle', 'font-size': 16, 'font-weight': 'bold'})]
  for (const t of [0, 0.2, 0.4, 0.6, 0.8, 1]) {
    parts.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${num(py(t))}" y2="${num(py(t))}" stroke="${COLOURS.grid}"/>`)
    parts.push(text(m.left - 8, py(t) + 4, pct(t), {'text-anchor': 'end', 'font-size': 11}))
  }
  o.values.forEach((v, i) => {
    const x = m.left + i * barWidth
    const h = Math.max(0, Math.min(1, v)) * ph
    const colour = o.reference && v < o.reference.value - 0.05 ? COLOURS.bad : COLOURS.bar
    parts.push(`<rect x="${num(x + barWidth * 0.12)}" y="${num(py(0) - h)}" width="${num(barWidth * 0.76)}" height="${num(h)}" fill="${colour}"/>`)
    if (barWidth >= 26) parts.push(text(x + barWidth / 2, py(0) - h - 5, `${(v * 100).toFixed(1)}`, {'text-anchor': 'middle', 'font-size': 10}))
    const lx = x + barWidth / 2
    const ly = py(0) + 16
    parts.push(text(lx, ly, o.labels[i]!, {'text-anchor': k > 16 ? 'end' : 'middle', 'font-size': Math.min(12, Math.max(7, barWidth / 2.5)), ...(k > 16 ? {transform: `rotate(-60 ${num(lx)} ${num(ly - 8)})`} : {})}))
  })
  parts.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${py(0)}" y2="${py(0)}" stroke="${COLOURS.axis}"/>`)
  parts.push(`<line x1="${m.left}" x2="${m.left}" y1="${py(0)}" y2="${py(1)}" stroke="${COLOURS.axis}"/>`)
  if (o.reference) {
    const y = py(o.reference.value)
    parts.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${num(y)}" y2="${num(y)}" stroke="${COLOURS.validation}" stroke-width="2" stroke-dasharray="6 4"/>`)
    parts.push(text(m.left + pw + 8, y + 4, o.reference.label, {'font-size': 11, fill: COLOURS.validation}))
  }
  parts.push(text(m.left + pw / 2, height - 12, o.xLabel, {'text-anchor': 'middle', 'font-size': 12}))
  parts.push(text(18, m.top + ph / 2, o.yLabel, {'text-anchor': 'middle', 'font-size': 12, transform: `rotate(-90 18 ${m.top + ph / 2})`}))
  return {svg: svgDocument(width, height, parts.join('')), width, height}
}

export interface GridImage {
  /** PNG bytes (any size; drawn into a square tile). */
  png: Buffer
  caption: string
  detail?: string
}

/** Images in a grid of tiles with a caption under each (embedded as data URIs). */
export function imageGridSvg(o: {title: string; images: readonly GridImage[]; columns: number; tile: number; note?: string}): {svg: string; width: number; height: number} {
  const pad = 12
  const captionH = 34
  const cols = Math.max(1, Math.min(o.columns, o.images.length || 1))
  const rows = Math.ceil(o.images.length / cols)
  const top = o.note ? 62 : 46
  const width = Math.max(360, pad + cols * (o.tile + pad))
  const height = top + Math.max(1, rows) * (o.tile + captionH + pad) + pad
  const parts = [text(width / 2, 26, o.title, {'text-anchor': 'middle', 'font-size': 16, 'font-weight': 'bold'})]
  if (o.note) parts.push(text(width / 2, 46, o.note, {'text-anchor': 'middle', 'font-size': 11, fill: COLOURS.muted}))
  if (o.images.length === 0) parts.push(text(width / 2, top + 30, 'none', {'text-anchor': 'middle', fill: COLOURS.muted}))
  o.images.forEach((img, i) => {
    const x = pad + (i % cols) * (o.tile + pad)
    const y = top + Math.floor(i / cols) * (o.tile + captionH + pad)
    parts.push(`<image x="${x}" y="${y}" width="${o.tile}" height="${o.tile}" xlink:href="data:image/png;base64,${img.png.toString('base64')}"/>`)
    parts.push(`<rect x="${x}" y="${y}" width="${o.tile}" height="${o.tile}" fill="none" stroke="${COLOURS.bad}" stroke-width="1.5"/>`)
    parts.push(text(x + o.tile / 2, y + o.tile + 14, img.caption, {'text-anchor': 'middle', 'font-size': 11}))
    if (img.detail) parts.push(text(x + o.tile / 2, y + o.tile + 28, img.detail, {'text-anchor': 'middle', 'font-size': 10, fill: COLOURS.muted}))
  })
  return {svg: svgDocument(width, height, parts.join('')), width, height}
}

/** Rasterises an SVG string to a PNG file (1 SVG unit = 1 pixel). */
export async function writeSvgPng(svg: string, file: string): Promise<{width: number; height: number; bytes: number}> {
  const info = await sharp(Buffer.from(svg), {density: 72}).png({compressionLevel: 9}).toFile(file)
  return {width: info.width, height: info.height, bytes: info.size}
}
