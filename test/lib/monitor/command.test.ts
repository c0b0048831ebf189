import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {loadConfig} from '../../../src/lib/config/load.js'
import {UserError} from '../../../src/lib/errors.js'
import {resolveMonitor} from '../../../src/lib/monitor/command.js'
import {tempDir} from '../../support/fixtures.js'

describe('ml monitor settings', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let withServe: string
  let plain: string

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-monitor-settings-'))
    withServe = path.join(dir, 'serve.yaml')
    await writeFile(withServe, 'data:\n  sources: [{type: folder, path: images}]\nserve:\n  port: 9123\n  host: 0.0.0.0\n')
    plain = path.join(dir, 'plain.yaml')
    await writeFile(plain, 'data:\n  sources: [{type: folder, path: images}]\n')
  })
  after(() => cleanup())

  const load = (file: string) => loadConfig(file)

  it('--interval takes milliseconds, like monitor.refreshMs and --interval-ms', async () => {
    const url = ['http://127.0.0.1:1']
    assert.equal((await resolveMonitor({config: plain, url, once: true, interval: '1000'}, load)).intervalMs, 1000)
    assert.equal((await resolveMonitor({config: plain, url, once: true, interval: '2s'}, load)).intervalMs, 2000)
    assert.equal((await resolveMonitor({config: plain, url, once: true, 'interval-ms': 250}, load)).intervalMs, 250)
    assert.equal((await resolveMonitor({config: plain, url, once: true, 'interval-ms': 0}, load)).intervalMs, 0)
    assert.equal((await resolveMonitor({config: plain, url}, load)).intervalMs, 2000)
    await assert.rejects(resolveMonitor({config: plain, url, 'interval-ms': 50}, load), /at most every 100ms/)
  })

  it('with no targets, watches the local server of the config (serve.host, serve.port)', async () => {
    const settings = await resolveMonitor({config: withServe, once: true}, load)
    assert.deepEqual(settings.targets, ['http://127.0.0.1:9123'])
    assert.deepEqual((await resolveMonitor({config: plain, once: true}, load)).targets, ['http://127.0.0.1:8080'])
    // A run alone is watched alone.
    await assert.rejects(resolveMonitor({config: withServe, run: 'nope'}, load), (e) => e instanceof UserError)
  })

  it('with neither config nor targets there is still nothing to watch', async () => {
    await assert.rejects(resolveMonitor({config: path.join(dir, 'missing.yaml'), once: true}, load), (e) => e instanceof UserError)
  })
})
