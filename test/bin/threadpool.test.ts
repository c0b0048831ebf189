// bin/threadpool.cjs: the size `ml` gives libuv's pool, and that it takes effect when loaded first.
import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import {existsSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'
import {describe, it} from 'node:test'
import {ROOT} from '../support/cli.js'

const run = promisify(execFile)
const MODULE = path.join(ROOT, 'bin', 'threadpool.cjs')
// Starts the pool with a burst of file operations, then reports the setting and the thread count.
const PROBE = `require('fs/promises'); Promise.all(Array.from({length: 64}, () => require('fs/promises').stat('/'))).then(() =>
  console.log(JSON.stringify({size: process.env.UV_THREADPOOL_SIZE ?? null, threads: require('fs').existsSync('/proc/self/task') ? require('fs').readdirSync('/proc/self/task').length : null})))`

async function probe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{size: string | null; threads: number | null}> {
  const base = {...process.env}
  delete base.UV_THREADPOOL_SIZE
  const {stdout} = await run(process.execPath, [...args, '-e', PROBE], {env: {...base, ...env}})
  return JSON.parse(stdout) as {size: string | null; threads: number | null}
}

describe('thread pool size (bin/threadpool.cjs)', () => {
  it('is the default decode concurrency plus 4, and the pool really has that many threads', async () => {
    const expected = 2 * os.availableParallelism() + 4
    const sized = await probe(['--require', MODULE])
    assert.equal(sized.size, String(expected))
    const plain = await probe([])
    assert.equal(plain.size, null)
    if (existsSync('/proc/self/task')) assert.equal(sized.threads! - plain.threads!, expected - 4, JSON.stringify({sized, plain}))
  })

  it('leaves a size the user set alone', async () => {
    assert.equal((await probe(['--require', MODULE], {UV_THREADPOOL_SIZE: '5'})).size, '5')
  })
})
