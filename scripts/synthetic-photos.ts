// Synthetic RGB "photos" in class folders, for the photo quickstart, bench:transfer and tests: each
// class is a texture or shape (stripes, checks, rings, blobs...) drawn in random colours on a noisy,
// randomly tinted background, so colour alone does not separate the classes.
import {mkdir} from 'node:fs/promises'
import path from 'node:path'
import seedrandom from 'seedrandom'
import sharp from 'sharp'

export const PHOTO_CLASSES = ['stripes', 'checks', 'rings', 'dots', 'diagonals', 'triangles'] as const

type Rng = () => number

/** Whether pixel (x, y) of a size x size image is "ink" for a class, given per-image parameters. */
function ink(kind: string, x: number, y: number, size: number, p: {period: number; phase: number; angle: number; cx: number; cy: number}): boolean {
  const u = x / size
  const v = y / size
  switch (kind) {
    case 'stripes': {
      const t = u * Math.cos(p.angle) * 0.3 + v
      return Math.floor(t * p.period + p.phase) % 2 === 0
    }
    case 'checks':
      return (Math.floor(u * p.period + p.phase) + Math.floor(v * p.period + p.phase)) % 2 === 0
    case 'rings': {
      const r = Math.hypot(u - p.cx, v - p.cy)
      return Math.floor(r * p.period * 2 + p.phase) % 2 === 0
    }
    case 'dots': {
      const fx = (u * p.period + p.phase) % 1
      const fy = (v * p.period + p.phase) % 1
      return Math.hypot(fx - 0.5, fy - 0.5) < 0.28
    }
    case 'diagonals':
      return Math.floor((u + v) * p.period + p.phase) % 2 === 0
    default: {
      // triangles: a big triangle somewhere
      const dx = u - p.cx
      const dy = v - p.cy + 0.25
      return dy > 0 && dy < 0.55 && Math.abs(dx) < dy * 0.7
    }
  }
}

/** One image's RGB bytes. */
export function drawPhoto(kind: string, size: number, rng: Rng): Buffer {
  const p = {period: 3 + rng() * 5, phase: rng(), angle: rng() * Math.PI, cx: 0.3 + rng() * 0.4, cy: 0.3 + rng() * 0.4}
  const fg = [rng() * 255, rng() * 255, rng() * 255]
  const bg = [rng() * 255, rng() * 255, rng() * 255]
  const noise = 20 + rng() * 40
  const out = Buffer.alloc(size * size * 3)
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const colour = ink(kind, x, y, size, p) ? fg : bg
      for (let c = 0; c < 3; c++) out[(y * size + x) * 3 + c] = Math.max(0, Math.min(255, colour[c]! + (rng() - 0.5) * noise))
    }
  }
  return out
}

/**
 * Writes `perClass` images of each of `classes` classes as <dir>/<class>/<n>.<format>, size x size
 * pixels (JPEG like camera photos, or PNG). Deterministic for a seed.
 */
export async function writePhotoFolders(dir: string, options: {perClass: number; size: number; classes?: number; seed?: number; format?: 'jpeg' | 'png'}): Promise<string[]> {
  const classes = PHOTO_CLASSES.slice(0, options.classes ?? 3)
  const rng = seedrandom.alea(`photos:${options.seed ?? 1}`)
  const format = options.format ?? 'jpeg'
  for (const kind of classes) {
    await mkdir(path.join(dir, kind), {recursive: true})
    for (let i = 0; i < options.perClass; i++) {
      const raw = drawPhoto(kind, options.size, rng)
      const image = sharp(raw, {raw: {width: options.size, height: options.size, channels: 3}})
      const file = path.join(dir, kind, `${String(i).padStart(4, '0')}.${format === 'jpeg' ? 'jpg' : 'png'}`)
      await (format === 'jpeg' ? image.jpeg({quality: 90}) : image.png()).toFile(file)
    }
  }
  return [...classes]
}
