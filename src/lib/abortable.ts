// Waiting that a stop request cuts short, for loops that poll (remote jobs, streams, the live dashboard).

/**
 * Waits `ms`, or less when `signal` aborts; never rejects (the caller checks `signal.aborted`).
 * node:timers/promises' setTimeout rejects with an AbortError instead, which every poller would catch.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, {once: true})
  })
}
