// Cheap per-image statistics the server records for drift: the size an image was sent at (read from
// its header, no decoding) and its mean brightness after preprocessing; and top-1 class counting.

export interface ImageSize {
  width: number
  height: number
}

/**
 * Width and height from the header of a PNG, JPEG, GIF, WebP or BMP file; undefined for other
 * formats or a header too short to tell (the caller then records nothing).
 */
export function imageSize(bytes: Uint8Array): ImageSize | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.length >= 24 && b.readUInt32BE(0) === 0x89504e47 && b.toString('latin1', 12, 16) === 'IHDR') {
    return {width: b.readUInt32BE(16), height: b.readUInt32BE(20)}
  }
  if (b.length >= 10 && (b.toString('latin1', 0, 6) === 'GIF87a' || b.toString('latin1', 0, 6) === 'GIF89a')) {
    return {width: b.readUInt16LE(6), height: b.readUInt16LE(8)}
  }
  if (b.length >= 26 && b.toString('latin1', 0, 2) === 'BM') {
    return {width: Math.abs(b.readInt32LE(18)), height: Math.abs(b.readInt32LE(22))}
  }
  if (b.length >= 30 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') {
    const chunk = b.toString('latin1', 12, 16)
    if (chunk === 'VP8 ' && b[23] === 0x9d && b[24] === 0x01 && b[25] === 0x2a) return {width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff}
    if (chunk === 'VP8L' && b[20] === 0x2f) {
      const bits = b.readUInt32LE(21)
      return {width: (bits & 0x3fff) + 1, height: ((bits >> 14) & 0x3fff) + 1}
    }
    if (chunk === 'VP8X') return {width: b.readUIntLE(24, 3) + 1, height: b.readUIntLE(27, 3) + 1}
    return undefined
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    // Walk the JPEG segments to the first start-of-frame marker, which holds the size.
    let i = 2
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) return undefined
      const marker = b[i + 1]!
      if (marker === 0xff) {
        i++
        continue
      }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
        i += 2
        continue
      }
      const length = b.readUInt16BE(i + 2)
      const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc
      if (sof) return {width: b.readUInt16BE(i + 7), height: b.readUInt16BE(i + 5)}
      i += 2 + length
    }
  }
  return undefined
}

/** Mean pixel value in [0, 1] of a preprocessed image (input = pixel * scale + offset). */
export function meanBrightness(input: Float32Array, scale: number, offset: number): number {
  if (input.length === 0 || scale === 0) return Number.NaN
  let sum = 0
  for (let i = 0; i < input.length; i++) sum += input[i]!
  return Math.min(1, Math.max(0, (sum / input.length - offset) / scale / 255))
}

/** The index of the highest probability in each of `n` rows (ties: the lower index). */
export function topClasses(probabilities: Float32Array, n: number, numClasses: number): number[] {
  const out: number[] = []
  for (let row = 0; row < n; row++) {
    let best = 0
    for (let k = 1; k < numClasses; k++) if (probabilities[row * numClasses + k]! > probabilities[row * numClasses + best]!) best = k
    out.push(best)
  }
  return out
}
