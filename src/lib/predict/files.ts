// Which files `ml predict` classifies: files as named, and the images inside named folders
// (recursively, by extension, in a stable order).
import {readdir, stat} from 'node:fs/promises'
import path from 'node:path'

/** Extensions of the formats predict decodes (data/image.ts SUPPORTED_FORMATS). */
export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif'] as const

export interface PredictInputs {
  /** Files to classify, in order: named files first as given, folder contents sorted by path. */
  files: string[]
  /** Named folders that held no image. */
  emptyFolders: string[]
}

export function isImageName(name: string): boolean {
  return (IMAGE_EXTENSIONS as readonly string[]).includes(path.extname(name).toLowerCase())
}

/**
 * Expands folders into the images under them; a named file is kept whatever its extension (a
 * missing or undecodable one is reported by name when classified). Links are not followed out of a
 * folder: readdir lists them without descending.
 */
export async function collectInputs(args: string[]): Promise<PredictInputs> {
  const files: string[] = []
  const emptyFolders: string[] = []
  const seen = new Set<string>()
  const add = (file: string) => {
    if (seen.has(file)) return
    seen.add(file)
    files.push(file)
  }
  for (const arg of args) {
    const info = await stat(arg).catch(() => undefined)
    if (info === undefined || !info.isDirectory()) {
      add(arg)
      continue
    }
    const entries = await readdir(arg, {recursive: true, withFileTypes: true})
    const images = entries
      .filter((e) => e.isFile() && isImageName(e.name) && !e.name.startsWith('.'))
      .map((e) => path.join(e.parentPath, e.name))
      .sort()
    if (images.length === 0) emptyFolders.push(arg)
    for (const image of images) add(image)
  }
  return {files, emptyFolders}
}
