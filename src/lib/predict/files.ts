// Which files `ml predict` classifies: files as named, the images inside named folders (recursively,
// by extension, in a stable order), glob patterns (whether or not the shell expanded them), text
// files of paths (`@paths.txt` or --list) and CSV files with a column of paths (--csv).
import {readdir, readFile, stat} from 'node:fs/promises'
import path from 'node:path'
import {parse as parseCsv} from 'csv-parse/sync'
import {glob, isDynamicPattern} from 'tinyglobby'
import {UserError} from '../errors.js'

/** Extensions of the formats predict decodes (data/image.ts SUPPORTED_FORMATS). */
export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif'] as const

/** A file to classify, or an entry already known to be unusable (an empty CSV cell): a row with its error. */
export type PredictInput = string | {file: string; error: string}

export interface PredictInputs {
  /** Files to classify, in order: named files and lists as given, folder and glob matches sorted by path. */
  files: PredictInput[]
  /** Named folders that held no image. */
  emptyFolders: string[]
  /** Glob patterns that matched no image. */
  emptyPatterns: string[]
}

export interface InputSources {
  /** Text files of paths, one a line (blank lines and lines starting with # are skipped). */
  lists?: string[]
  /** CSV files with a header row, and the column holding the paths. */
  csv?: {files: string[]; column: string}
}

export function isImageName(name: string): boolean {
  return (IMAGE_EXTENSIONS as readonly string[]).includes(path.extname(name).toLowerCase())
}

const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/** A relative path from a list or CSV names a file beside that list, wherever ml was started. */
function besides(listFile: string, entry: string): string {
  return path.isAbsolute(entry) ? entry : path.join(path.dirname(listFile), entry)
}

async function readInputFile(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EISDIR' ? 'is a folder' : (error as Error).message
    throw new UserError(`${what} ${file} ${why}`, {
      code: 'PREDICT_LIST_UNREADABLE',
      exit: 'usage',
      cause: error,
      suggestions: ['Name an existing text file of paths (one a line) or CSV file.'],
    })
  }
}

/** The paths a text file lists, resolved against its folder. */
export async function readPathList(file: string): Promise<string[]> {
  const text = await readInputFile(file, 'list')
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => besides(file, line))
}

/**
 * The paths in one column of a CSV file (header row first), resolved against the CSV's folder. A row
 * whose cell is empty stands for a missing file (reported as that row's error, not dropped).
 */
export async function readCsvPaths(file: string, column: string): Promise<PredictInput[]> {
  const text = await readInputFile(file, 'CSV file')
  let rows: Array<Record<string, string>>
  try {
    rows = parseCsv(text, {columns: true, bom: true, skip_empty_lines: true, trim: true, relax_column_count: true}) as Array<Record<string, string>>
  } catch (error) {
    throw new UserError(`CSV file ${file} cannot be parsed: ${(error as Error).message}`, {
      code: 'PREDICT_CSV_INVALID',
      exit: 'usage',
      cause: error,
      suggestions: ['Give a CSV file with a header row (comma-separated, double quotes around cells holding commas).'],
    })
  }
  const header = rows.length ? Object.keys(rows[0]!) : headerOf(text)
  if (!header.includes(column)) {
    throw new UserError(`CSV file ${file} has no column "${column}" (columns: ${header.join(', ') || 'none'})`, {
      code: 'PREDICT_CSV_COLUMN',
      exit: 'usage',
      suggestions: [`Name the column of paths with --path-column${header.length ? `, e.g. --path-column ${header[0]}` : ''}.`],
    })
  }
  return rows.map((row, i) => {
    const cell = row[column] ?? ''
    return cell === '' ? {file: `${file}#${i + 1}`, error: `${file} row ${i + 1}: no path in column "${column}"`} : besides(file, cell)
  })
}

function headerOf(text: string): string[] {
  try {
    const [first] = parseCsv(text, {bom: true, to_line: 1, trim: true}) as string[][]
    return first ?? []
  } catch {
    return []
  }
}

/**
 * Expands folders into the images under them and glob patterns into the images they match (a
 * pattern the shell expanded arrives as files, and is the same); a named file is kept whatever its
 * extension (a missing or undecodable one is reported by name when classified). `@file` names a
 * list of paths. Links are not followed out of a folder: readdir lists them without descending.
 */
export async function collectInputs(args: string[], sources: InputSources = {}): Promise<PredictInputs> {
  const files: PredictInput[] = []
  const emptyFolders: string[] = []
  const emptyPatterns: string[] = []
  const seen = new Set<string>()
  const add = (input: PredictInput) => {
    const key = typeof input === 'string' ? input : input.file
    if (seen.has(key)) return
    seen.add(key)
    files.push(input)
  }
  for (const arg of args) {
    const info = await stat(arg).catch(() => undefined)
    if (info?.isDirectory()) {
      const entries = await readdir(arg, {recursive: true, withFileTypes: true})
      const images = entries
        .filter((e) => e.isFile() && isImageName(e.name) && !e.name.startsWith('.'))
        .map((e) => path.join(e.parentPath, e.name))
        .sort(byCodeUnit)
      if (images.length === 0) emptyFolders.push(arg)
      for (const image of images) add(image)
    } else if (info === undefined && arg.startsWith('@') && arg.length > 1) {
      for (const file of await readPathList(arg.slice(1))) add(file)
    } else if (info === undefined && isDynamicPattern(arg)) {
      // Forward slashes in patterns, whatever the platform; matches are absolute or relative as the pattern is, as a shell's.
      const matches = (await glob(arg.replaceAll('\\', '/'), {onlyFiles: true, dot: false, followSymbolicLinks: false, expandDirectories: false, absolute: path.isAbsolute(arg)}))
        .filter(isImageName)
        .map((m) => path.normalize(m))
        .sort(byCodeUnit)
      if (matches.length === 0) emptyPatterns.push(arg)
      for (const match of matches) add(match)
    } else {
      add(arg)
    }
  }
  for (const list of sources.lists ?? []) for (const file of await readPathList(list)) add(file)
  for (const csv of sources.csv?.files ?? []) for (const file of await readCsvPaths(csv, sources.csv!.column)) add(file)
  return {files, emptyFolders, emptyPatterns}
}
