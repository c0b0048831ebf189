// The writer lock of a dataset store: one ingest writes at a time, any number of readers follow the
// manifest without locking.
import os from 'node:os'
import {UserError} from '../../errors.js'
import {errorCode, joinPath, remove, writeFileAtomic} from '../../storage/index.js'
import {LOCK, readIfExists} from './layout.js'

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Takes the store's writer lock: a file holding our pid and host (created only if absent), taken
 * over when its owner is gone. The commit's manifest precondition backs it up where the lock cannot
 * tell (a stale lock taken over by two processes at once).
 */
export async function lock(dir: string): Promise<void> {
  const file = joinPath(dir, LOCK)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFileAtomic(file, `${process.pid} ${os.hostname()}\n`, {createOnly: true})
      return
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error
    }
    const [pidText, host] = ((await readIfExists(file)) ?? '').trim().split(/\s+/)
    const owner = Number.parseInt(pidText ?? '', 10)
    // A pid says nothing about a process on another machine (a gs:// store is shared between
    // hosts): that one is taken to be running. Our own pid here means an earlier store object of
    // this process (or a dead process whose pid was reused by us, as in containers).
    const elsewhere = host !== undefined && host !== os.hostname()
    if (Number.isInteger(owner) && (elsewhere || (owner !== process.pid && isAlive(owner)))) {
      throw new UserError(`the dataset store ${dir} is being written by another ml process (pid ${owner}${elsewhere ? ` on ${host}` : ''})`, {
        code: 'DATASET_LOCKED',
        exit: 'usage',
        details: {store: dir, pid: owner, ...(elsewhere ? {host} : {})},
        suggestions: [`Wait for it to finish, or delete ${file} if no such process is running.`],
      })
    }
    await remove(file)
  }
  throw new Error(`could not lock ${dir}`)
}

export async function unlock(dir: string): Promise<void> {
  const file = joinPath(dir, LOCK)
  const owner = await readIfExists(file)
  if (owner !== undefined && Number.parseInt(owner, 10) === process.pid) await remove(file)
}
