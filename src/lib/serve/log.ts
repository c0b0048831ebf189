// JSON-lines logging for the server: events (startup, model loads, failures) and the access log,
// one object per line so that log shippers need no parsing rules.
import {createWriteStream, mkdirSync, openSync} from 'node:fs'
import path from 'node:path'
import type {Writable} from 'node:stream'

export type LogLevel = 'info' | 'warn' | 'error'

export class JsonLog {
  /** Lines not yet handed to the stream (batched logs only). */
  private pending: string[] = []
  private flushing: NodeJS.Immediate | undefined

  /**
   * `batched`: lines written during one turn of the event loop go to the stream in one write, after it
   * (the access log: one write per request cost the server a few percent of its throughput).
   */
  constructor(
    private readonly stream: Writable | undefined,
    private readonly fields: Record<string, unknown> = {},
    private readonly batched = false,
  ) {}

  get enabled(): boolean {
    return this.stream !== undefined
  }

  /** Writes one line; `time` first so that lines sort and grep well. */
  write(record: Record<string, unknown>): void {
    if (this.stream === undefined || this.stream.destroyed) return
    const line = JSON.stringify({time: new Date().toISOString(), ...this.fields, ...record}) + '\n'
    if (!this.batched) {
      this.stream.write(line)
      return
    }
    this.pending.push(line)
    this.flushing ??= setImmediate(() => this.flush())
  }

  /** Hands the batched lines to the stream now. */
  flush(): void {
    if (this.flushing !== undefined) clearImmediate(this.flushing)
    this.flushing = undefined
    if (this.pending.length === 0) return
    const text = this.pending.length === 1 ? this.pending[0]! : this.pending.join('')
    this.pending = []
    if (this.stream !== undefined && !this.stream.destroyed) this.stream.write(text)
  }

  event(level: LogLevel, event: string, fields: Record<string, unknown> = {}): void {
    this.write({level, event, ...fields})
  }
}

export interface AccessLogTarget {
  log: JsonLog
  /** Flushes and closes a file target; standard streams stay open. */
  close(): Promise<void>
}

/**
 * `stdout`, `stderr`, `off`, or a file that is appended to (O_APPEND: processes may share it). The
 * file is opened here, synchronously, so that a bad path fails at startup rather than on a request.
 */
export function openAccessLog(target: string, fields: Record<string, unknown> = {}, onError: (error: Error) => void = () => {}): AccessLogTarget {
  if (target === 'off') return {log: new JsonLog(undefined), close: async () => {}}
  if (target === 'stdout' || target === 'stderr') {
    const log = new JsonLog(target === 'stdout' ? process.stdout : process.stderr, fields, true)
    return {log, close: async () => log.flush()}
  }
  mkdirSync(path.dirname(target), {recursive: true})
  const stream = createWriteStream('', {fd: openSync(target, 'a')})
  // A full disk must not take the server down: the stream is destroyed and logging stops.
  stream.once('error', onError)
  const log = new JsonLog(stream, fields, true)
  return {
    log,
    close: () => {
      log.flush()
      return new Promise<void>((resolve) => stream.end(resolve))
    },
  }
}
