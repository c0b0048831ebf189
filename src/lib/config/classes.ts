// The classes a config's sources name, when that is known without reading an image: folder sources
// (their sub-folders, or their fixed label). Used to warn at once, before an ingest reads anything,
// that a dataset of one class cannot train a classifier.
import {readdir} from 'node:fs/promises'
import {resolvePath, type LoadedConfig} from './load.js'

/** The class names of the sources, or undefined when a source's classes are known only from its data (Kafka, cloud). */
export async function classesNamedBySources(loaded: LoadedConfig): Promise<string[] | undefined> {
  const classes = new Set<string>()
  for (const source of loaded.config.data.sources) {
    if (source.type !== 'folder') return undefined
    if (source.label !== undefined) {
      classes.add(source.label)
      continue
    }
    try {
      for (const entry of await readdir(resolvePath(loaded, source.path), {withFileTypes: true})) {
        if (entry.isDirectory() && !entry.name.startsWith('.')) classes.add(entry.name)
      }
    } catch {
      // A missing folder is the ingest's to report, with its own error.
      return undefined
    }
  }
  return [...classes].sort()
}

/** The warning for sources that name a single class, if they do. */
export async function singleClassWarning(loaded: LoadedConfig): Promise<string | undefined> {
  const classes = await classesNamedBySources(loaded)
  if (classes === undefined || classes.length !== 1) return undefined
  return `data.sources hold one class only (${classes[0]}): a classifier needs at least two, and \`ml train\` will refuse this dataset. Put each class in its own sub-folder: images/<class>/*.jpg.`
}
