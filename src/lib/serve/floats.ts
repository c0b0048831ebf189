// Request tensors' float arrays, reused. A request's floats live from parsing until its batch is
// copied into an instance's batch buffer (serve/pool.ts); allocated fresh each time, they are
// garbage the size of every request (200 KB for 64 MNIST images), which V8 counts as external
// memory and answers with full garbage collections of the event loop's heap under load. The
// scheduler hands them back here once copied; nothing else may keep one past runModel().
const MAX_POOLED_BYTES = 64 * 1024 * 1024

const free = new Map<number, Float32Array[]>()
let pooledBytes = 0
/** Arrays this module handed out: only those come back (never a view of someone else's buffer). */
const issued = new WeakSet<Float32Array>()
/** Arrays in the pool now: one given back twice is ignored, not handed out to two requests. */
const pooled = new WeakSet<Float32Array>()

/** A Float32Array of `length` floats with unspecified contents: the caller writes every element. */
export function takeFloats(length: number): Float32Array {
  const reused = free.get(length)?.pop()
  if (reused !== undefined) {
    pooled.delete(reused)
    pooledBytes -= reused.byteLength
    return reused
  }
  const array = new Float32Array(length)
  issued.add(array)
  return array
}

/** Gives an array back once nothing reads it any more; arrays not from takeFloats() are left alone. */
export function giveFloats(array: Float32Array): void {
  if (!issued.has(array) || pooled.has(array) || pooledBytes + array.byteLength > MAX_POOLED_BYTES) return
  let list = free.get(array.length)
  if (list === undefined) free.set(array.length, (list = []))
  list.push(array)
  pooled.add(array)
  pooledBytes += array.byteLength
}

/** Bytes held for reuse (tests). */
export function pooledFloatBytes(): number {
  return pooledBytes
}
