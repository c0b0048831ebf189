// JSON-lines logging for the server: events (startup, model loads, failures) and the access log,
// one object per line so that log shippers need no parsing rules.
import {createWriteStream, mkdirSync, openSync} from 'node:fs'
import path from 'node:path'
import type {Writable} from 'node:stream'

export type LogLevel = 'info' | 'warn' | 'error'

export class JsonLog {
  constructor(
    private readonly stream: Writable | undefined,
    private readonly fields: Record<string, unknown> = {},
  ) {}

  get enabled(): boolean {
    return this.stream !== undefined
  }

  /** Writes one line; `time` first so that lines sort and grep well. */
  write(record: Record<string, unknown>): void {
    if (this.stream === undefined || this.stream.destroyed) return
    this.stream.write(JSON.stringify({time: new Date().toISOString(), ...this.fields, ...record}) + '\n')
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
    return {log: new JsonLog(target === 'stdout' ? process.stdout : process.stderr, fields), close: async () => {}}
  }
  mkdirSync(path.dirname(target), {recursive: true})
  const stream = createWriteStream('', {fd: openSync(target, 'a')})
  // A full disk must not take the server down: the stream is destroyed and logging stops.
  stream.once('error', onError)
  return {
    log: new JsonLog(stream, fields),
    close: () => new Promise<void>((resolve) => stream.end(resolve)),
  }
}
