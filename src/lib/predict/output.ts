// Where `ml predict` writes its rows: JSON Lines or CSV, to a file or stdout, one row per input file
// as soon as its batch is done (never buffered to the end), so that a run stopped half-way or a bad
// file later on leaves every row already written intact.
import {createWriteStream} from 'node:fs'
import {once} from 'node:events'
import path from 'node:path'
import type {Writable} from 'node:stream'
import {stringify} from 'csv-stringify/sync'
import {UserError} from '../errors.js'
import type {PredictFailure, Prediction} from './run.js'

export type OutputFormat = 'jsonl' | 'csv'

/** The format an --output file's extension names (.jsonl, .ndjson, .json, .csv), if any. */
export function formatOfFile(file: string): OutputFormat | undefined {
  const ext = path.extname(file).toLowerCase()
  return ext === '.csv' ? 'csv' : ext === '.jsonl' || ext === '.ndjson' || ext === '.json' ? 'jsonl' : undefined
}

/** The CSV header for top-k rows: file, label, score, then label_2, score_2, ... and error. */
export function csvHeader(topK: number): string[] {
  const columns = ['file', 'label', 'score']
  for (let i = 2; i <= topK; i++) columns.push(`label_${i}`, `score_${i}`)
  columns.push('error')
  return columns
}

/** One result as a CSV record under csvHeader(topK). */
export function csvRecord(result: Prediction | PredictFailure, topK: number): string[] {
  const cells = [result.file]
  for (let i = 0; i < topK; i++) {
    const t = 'top' in result ? result.top[i] : undefined
    cells.push(t?.label ?? '', t === undefined ? '' : String(t.score))
  }
  cells.push('error' in result ? result.error : '')
  return cells
}

/** One result as a JSON Lines row: {file, label, score, top: [{label, score}]} or {file, error}. */
export function jsonRow(result: Prediction | PredictFailure): Record<string, unknown> {
  if ('error' in result) return {file: result.file, error: result.error}
  return {file: result.file, label: result.top[0]!.label, score: result.top[0]!.score, top: result.top.map((t) => ({label: t.label, score: t.score}))}
}

export interface RowWriter {
  /** Writes one row; resolves when the stream can take more (its backpressure). */
  write(result: Prediction | PredictFailure): Promise<void>
  /** Resolves once every row written so far has reached the file (or pipe). */
  flush(): Promise<void>
  /** Flushes and closes a file (stdout stays open). */
  close(): Promise<void>
  rows: number
}

/** Writes rows to `stream` (stdout, or a file opened by openRowWriter). */
export function rowWriter(stream: Writable, format: OutputFormat, topK: number, closeStream: boolean): RowWriter {
  let headerDone = format !== 'csv'
  let last: Promise<void> = Promise.resolve()
  const writer: RowWriter = {
    rows: 0,
    flush: () => last,
    async write(result) {
      let text = ''
      if (!headerDone) {
        text += stringify([csvHeader(topK)])
        headerDone = true
      }
      text += format === 'csv' ? stringify([csvRecord(result, topK)]) : JSON.stringify(jsonRow(result)) + '\n'
      writer.rows++
      // Writes complete in order: the last one's callback means every row so far is out.
      let ready = true
      last = new Promise<void>((resolve, reject) => {
        ready = stream.write(text, (error) => (error ? reject(error) : resolve()))
      })
      last.catch(() => {})
      // events.once rejects when the stream errors meanwhile (a full disk, a closed pipe).
      if (!ready) await once(stream, 'drain')
    },
    async close() {
      if (!headerDone) {
        stream.write(stringify([csvHeader(topK)]))
        headerDone = true
      }
      if (!closeStream) return
      await new Promise<void>((resolve, reject) => {
        stream.once('error', reject)
        stream.end(() => resolve())
      })
    },
  }
  return writer
}

/**
 * Opens an --output file for rows (created or replaced); fails up front, before any model is loaded
 * or image decoded, when it cannot be written.
 */
export async function openRowWriter(file: string, format: OutputFormat, topK: number): Promise<RowWriter> {
  const stream = createWriteStream(file)
  try {
    await once(stream, 'open')
  } catch (error) {
    throw new UserError(`cannot write ${file}: ${(error as Error).message}`, {
      code: 'PREDICT_OUTPUT_UNWRITABLE',
      exit: 'usage',
      cause: error,
      suggestions: ['Name a file in an existing, writable folder with --output.'],
    })
  }
  return rowWriter(stream, format, topK, true)
}
