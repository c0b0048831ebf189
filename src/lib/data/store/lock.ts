// Who may write a dataset store. Either one exclusive writer (the `.lock` file: a folder ingest, or
// anything else that assigns class indices on its own), or any number of shared writers (the
// members of a Kafka consumer group, each registered as writers/<id>), whose commits are
// compare-and-swap (see DatasetStore.commit). Readers never lock: they follow the manifest.
import os from 'node:os'
import {UserError} from '../../errors.js'
import {errorCode, joinPath, listNames, remove, writeFileAtomic} from '../../storage/index.js'
import {LOCK, readIfExists, WRITERS_DIR} from './layout.js'

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** A lock or registration file's owner: `<pid> <host>`. */
interface Owner {
  pid: number
  host: string | undefined
  /** The owner runs on another machine: nothing here can tell whether it is still running. */
  elsewhere: boolean
}

function parseOwner(text: string | undefined): Owner | undefined {
  if (text === undefined) return undefined
  const [pidText, host] = text.trim().split(/\s+/)
  const pid = Number.parseInt(pidText ?? '', 10)
  if (!Number.isInteger(pid)) return undefined
  return {pid, host, elsewhere: host !== undefined && host !== os.hostname()}
}

const ownerLine = () => `${process.pid} ${os.hostname()}\n`

/**
 * A pid says nothing about a process on another machine (a gs:// store is shared between hosts):
 * that one is taken to be running. Our own pid counts as running (another store object of this
 * process, or a dead process whose pid was reused by us, as in containers: see each caller).
 */
const running = (owner: Owner) => owner.elsewhere || owner.pid === process.pid || isAlive(owner.pid)

function lockedError(dir: string, file: string, owner: Owner, what: string): UserError {
  return new UserError(`the dataset store ${dir} is being written by ${what} (pid ${owner.pid}${owner.elsewhere ? ` on ${owner.host}` : ''})`, {
    code: 'DATASET_LOCKED',
    exit: 'usage',
    details: {store: dir, pid: owner.pid, ...(owner.elsewhere ? {host: owner.host} : {})},
    suggestions: [`Wait for it to finish, or delete ${file} if no such process is running.`],
  })
}

/** The registered shared writers of the store that may still be running, with their files. */
async function liveWriters(dir: string): Promise<Array<{file: string; owner: Owner}>> {
  const live: Array<{file: string; owner: Owner}> = []
  for (const name of await listNames(joinPath(dir, WRITERS_DIR))) {
    const file = joinPath(dir, WRITERS_DIR, name)
    const owner = parseOwner(await readIfExists(file))
    if (owner && running(owner)) live.push({file, owner})
  }
  return live
}

/**
 * Takes the store's exclusive writer lock: a file holding our pid and host (created only if absent),
 * taken over when its owner is gone; refused while shared writers are registered and running. The
 * commit's compare-and-swap backs it up where the lock cannot tell (a stale lock taken over by two
 * processes at once).
 */
export async function lock(dir: string): Promise<void> {
  const file = joinPath(dir, LOCK)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFileAtomic(file, ownerLine(), {createOnly: true})
      // Lock first, then look for shared writers (which register first, then look at the lock): of
      // two starting at once, at least one sees the other.
      const [writer] = await liveWriters(dir)
      if (writer) {
        await remove(file)
        throw lockedError(dir, writer.file, writer.owner, 'the members of a consumer group')
      }
      return
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error
    }
    const owner = parseOwner(await readIfExists(file))
    // Our own pid here means an earlier store object of this process, or a dead process whose pid
    // was reused by us (as in containers): taken over.
    if (owner && (owner.elsewhere || (owner.pid !== process.pid && isAlive(owner.pid)))) throw lockedError(dir, file, owner, 'another ml process')
    await remove(file)
  }
  throw new Error(`could not lock ${dir}`)
}

export async function unlock(dir: string): Promise<void> {
  const file = joinPath(dir, LOCK)
  const owner = await readIfExists(file)
  if (owner !== undefined && Number.parseInt(owner, 10) === process.pid) await remove(file)
}

/**
 * Registers a shared writer `id` (writers/<id>), refused while an exclusive writer holds the lock.
 * A stale lock (its owner gone) is left for the next exclusive writer to take over.
 */
export async function register(dir: string, id: string): Promise<void> {
  const file = joinPath(dir, WRITERS_DIR, id)
  await writeFileAtomic(file, ownerLine(), {createOnly: true})
  const owner = parseOwner(await readIfExists(joinPath(dir, LOCK)))
  if (owner && (owner.elsewhere || (owner.pid !== process.pid && isAlive(owner.pid)))) {
    await remove(file)
    throw lockedError(dir, joinPath(dir, LOCK), owner, 'another ml process')
  }
}

export async function unregister(dir: string, id: string): Promise<void> {
  await remove(joinPath(dir, WRITERS_DIR, id))
}

/**
 * Shared writers that died on this machine (registered, their pid gone): their uncommitted shards
 * are strays. Writers on other machines are never judged dead here (see running()).
 */
export async function deadWriters(dir: string): Promise<Set<string>> {
  const dead = new Set<string>()
  for (const name of await listNames(joinPath(dir, WRITERS_DIR))) {
    const owner = parseOwner(await readIfExists(joinPath(dir, WRITERS_DIR, name)))
    if (owner === undefined || !running(owner)) dead.add(name)
  }
  return dead
}
