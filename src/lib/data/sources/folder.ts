// The folder source: images on a local disk, one sub-folder per class (or one fixed label), listed
// in a sorted, streamed walk so that a million-file tree costs one directory's names of memory.
import {closeSync, fstatSync, openSync, readFileSync, type Stats} from 'node:fs'
import {lstat, opendir, realpath, stat} from 'node:fs/promises'
import path from 'node:path'
import type {FolderSourceConfig} from '../../config/schema.js'
import {resolvePath} from '../../config/load.js'
import {UserError} from '../../errors.js'
import {TooLargeError, type SourceContext, type SourceItem} from './types.js'

function configKey(ctx: SourceContext): string {
  return ctx.index === undefined ? 'data.sources[].path' : `data.sources[${ctx.index}].path`
}

/** Resolves the source's folder and checks that it is one; throws a UserError naming the config key. */
async function resolveRoot(source: FolderSourceConfig, ctx: SourceContext): Promise<string> {
  const root = resolvePath(ctx, source.path)
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(root)) {
    throw new UserError(`${configKey(ctx)}: ${root} is a URI; folder sources read local folders only`, {
      code: 'SOURCE_UNSUPPORTED',
      exit: 'usage',
      suggestions: ['Copy the images to a local folder, or use a source type made for that storage.'],
    })
  }
  let stats: Stats
  try {
    stats = await stat(root)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new UserError(`${configKey(ctx)}: folder ${root} does not exist`, {
        code: 'SOURCE_NOT_FOUND',
        exit: 'data',
        cause: error,
        details: {key: configKey(ctx), path: root},
        suggestions: ['Relative paths are resolved against the folder of the config file.'],
      })
    }
    throw new UserError(`${configKey(ctx)}: cannot read folder ${root}: ${(error as Error).message}`, {
      code: 'SOURCE_UNREADABLE',
      exit: 'data',
      cause: error,
      details: {key: configKey(ctx), path: root},
    })
  }
  if (!stats.isDirectory()) {
    throw new UserError(`${configKey(ctx)}: ${root} is not a folder`, {
      code: 'SOURCE_NOT_FOUND',
      exit: 'data',
      details: {key: configKey(ctx), path: root},
      suggestions: ['A folder source needs a folder with one sub-folder per class (or `label` set and the images in it).'],
    })
  }
  return root
}

interface Listing {
  /** Visible entry names, sorted by code unit (not localeCompare): the same on every machine. */
  names: string[]
  directories: Set<string>
  /** Symlinks and entries whose type the file system did not report: these need a stat. */
  others: Set<string>
}

// Names rather than Dirent objects, and types as sets of the few non-files, because a flat folder of
// a million images has to be held in memory whole to be sorted.
async function listFolder(dir: string, signal: AbortSignal | undefined): Promise<Listing | undefined> {
  const listing: Listing = {names: [], directories: new Set(), others: new Set()}
  try {
    for await (const entry of await opendir(dir)) {
      if (signal?.aborted) return undefined
      const name = entry.name
      if (name.startsWith('.')) continue
      if (entry.isFile()) {
        listing.names.push(name)
      } else if (entry.isDirectory()) {
        listing.names.push(name)
        listing.directories.add(name)
      } else if (entry.isSymbolicLink() || !(entry.isFIFO() || entry.isSocket() || entry.isBlockDevice() || entry.isCharacterDevice())) {
        listing.names.push(name)
        listing.others.add(name)
      }
    }
  } catch (error) {
    // A folder removed while we walk is simply gone; anything else (permissions) needs the user.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new UserError(`cannot list folder ${dir}: ${(error as Error).message}`, {code: 'SOURCE_UNREADABLE', exit: 'data', cause: error})
  }
  listing.names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  return listing
}

interface FoundFile {
  file: string
  /** The class folder (first path segment under the root), undefined for files in the root itself. */
  classFolder: string | undefined
  stats?: Stats
  /** Set for a symlink to a file outside the source folder: listed (and quarantined), never read. */
  outside?: true
}

/**
 * Depth-first walk in sorted order, one folder listing per level in memory. Hidden entries are
 * skipped; symlinks are followed to files inside the tree only, never to folders (no cycles) and
 * never out of the tree (a link to /etc/passwd in an image folder must not become training data or
 * a log line). Regular files are not stat'ed (the listing's entry types are enough).
 */
async function* walk(root: string, signal: AbortSignal | undefined): AsyncGenerator<FoundFile> {
  const realRoot = await realpath(root)
  const inTree = (target: string) => target === realRoot || target.startsWith(realRoot.endsWith(path.sep) ? realRoot : realRoot + path.sep)
  async function* visit(dir: string, classFolder: string | undefined): AsyncGenerator<FoundFile> {
    const listing = await listFolder(dir, signal)
    if (listing === undefined) return
    for (const name of listing.names) {
      if (signal?.aborted) return
      const full = path.join(dir, name)
      const folderLabel = classFolder ?? name
      if (listing.directories.has(name)) {
        yield* visit(full, folderLabel)
        continue
      }
      const isOther = listing.others.has(name)
      if (!isOther) {
        yield {file: full, classFolder}
        continue
      }
      let stats: Stats
      try {
        stats = await stat(full)
      } catch {
        // A dangling symlink, or a file deleted meanwhile: nothing to read.
        continue
      }
      if (stats.isFile()) {
        const target = await realpath(full).catch(() => undefined)
        if (target === undefined) continue
        yield inTree(target) ? {file: full, classFolder, stats} : {file: full, classFolder, outside: true}
      } else if (stats.isDirectory() && isOther) {
        // Only an entry of unknown type can be a real folder here; a symlink to a folder is skipped.
        const link = await lstat(full).catch(() => undefined)
        if (link !== undefined && !link.isSymbolicLink()) yield* visit(full, folderLabel)
      }
    }
  }
  yield* visit(root, undefined)
}

/**
 * Reads a local image with synchronous calls. From the page cache a 50 KB file takes some tens of
 * microseconds this way, while each of the four asynchronous steps of fs.readFile (open, fstat,
 * read, close) waits for a libuv thread, and during ingest those threads are busy with sharp's
 * decodes: the queueing, not the reading, was what the folder pipeline lost against a bare sharp
 * loop. The size is checked from the open file before any byte is read.
 */
async function readLocalFile(file: string, maxBytes: number | undefined): Promise<Buffer> {
  const fd = openSync(file, 'r')
  try {
    const {size} = fstatSync(fd)
    if (maxBytes !== undefined && size > maxBytes) throw new TooLargeError(size)
    const bytes = readFileSync(fd)
    // A file still being written may have grown since the fstat.
    if (maxBytes !== undefined && bytes.length > maxBytes) throw new TooLargeError(bytes.length)
    return bytes
  } finally {
    closeSync(fd)
  }
}

/**
 * Streams the images of a folder source. Iteration stops early (without an error) once ctx.signal
 * is aborted; callers check `signal.aborted` to tell that from the end of the folder.
 */
export async function* openFolderSource(source: FolderSourceConfig, ctx: SourceContext): AsyncGenerator<SourceItem> {
  const root = await resolveRoot(source, ctx)
  // No stat per file: read() checks the size of the open file, one system call instead of a trip
  // through the libuv pool on the path that feeds the decoders.
  for await (const found of walk(root, ctx.signal)) {
    if (ctx.signal?.aborted) return
    const file = found.file
    const item: SourceItem = {
      origin: file,
      label: source.label ?? found.classFolder,
      read: (maxBytes) => readLocalFile(file, maxBytes),
    }
    if (found.outside) {
      item.problem = {reason: 'outside-source', detail: `a symbolic link to a file outside ${root}: not followed`}
      item.read = () => Promise.reject(new Error(`${file} links out of ${root}; not read`))
    }
    if (source.split !== undefined) item.split = source.split
    if (found.stats !== undefined) item.size = found.stats.size
    yield item
  }
}

/** Number of items openFolderSource would yield, from a listing only (stats only for symlinks). */
export async function countFolderSource(source: FolderSourceConfig, ctx: SourceContext): Promise<number | undefined> {
  const root = await resolveRoot(source, ctx)
  let count = 0
  for await (const _ of walk(root, ctx.signal)) count++
  return ctx.signal?.aborted ? undefined : count
}
