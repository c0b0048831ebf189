// Cheap per-image statistics the server records for drift: the size an image was sent at (read from
// its header, no decoding) and its mean brightness after preprocessing; and top-1 class counting.

// The size is read by the one image sniffer (data/sniff.ts).
export {imageSize, type ImageSize} from '../data/sniff.js'

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
