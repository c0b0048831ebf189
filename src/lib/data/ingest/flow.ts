// Small concurrency helpers of the ingest run: a semaphore, a timeout race and a stream merger.

export const TICK = Symbol('tick')

/** A counting semaphore that hands a released slot straight to the next waiter (never over the limit). */
export function limiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0
  const waiting: Array<() => void> = []
  return async (task) => {
    if (active < limit) active++
    else await new Promise<void>((resolve) => waiting.push(resolve))
    try {
      return await task()
    } finally {
      const next = waiting.shift()
      if (next) next()
      else active--
    }
  }
}

/** Resolves to TICK after `ms` unless `p` settles first. */
export function unlessTimeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TICK> {
  if (!Number.isFinite(ms)) return p
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(TICK), Math.max(0, ms))
    p.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error) => {
        clearTimeout(timer)
        reject(error)
      },
    )
  })
}

/** Interleaves several streams, taking whichever has an item first (order within each is kept). */
export async function* mergeStreams<T>(streams: AsyncIterable<T>[]): AsyncGenerator<T> {
  const iterators = streams.map((s) => s[Symbol.asyncIterator]())
  const pending = new Map<number, Promise<{i: number; r: IteratorResult<T>}>>()
  const pull = (i: number) => pending.set(i, iterators[i]!.next().then((r) => ({i, r})))
  iterators.forEach((_, i) => pull(i))
  try {
    while (pending.size > 0) {
      const {i, r} = await Promise.race(pending.values())
      if (r.done) {
        pending.delete(i)
        continue
      }
      pull(i)
      yield r.value
    }
  } finally {
    // Not awaited: a stream blocked waiting for messages only ends when it is closed.
    for (const it of iterators) void it.return?.()?.catch(() => {})
  }
}
