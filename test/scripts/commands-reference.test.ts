// The command reference (docs/commands.md) is what `oclif readme` makes of the commands now, and every
// command's --help has examples.
import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import {test} from 'node:test'
import {Config} from '@oclif/core'
import {generateReference, REFERENCE} from '../../scripts/commands-reference.js'
import {ROOT} from '../support/cli.js'

test('docs/commands.md matches the commands (run `npm run readme` when this fails)', async () => {
  const [current, fresh] = await Promise.all([readFile(REFERENCE, 'utf8'), generateReference()])
  assert.match(fresh, /## `ml train`/)
  assert.equal(current, fresh)
})

test('every command has examples in its --help, and the reference shows them', async () => {
  const config = await Config.load(ROOT)
  // Hidden commands (the autocomplete plugin's internals) have no help page and no reference entry.
  const commands = config.commands.filter((c) => !c.hidden)
  const ids = commands.map((c) => c.id)
  assert.ok(ids.includes('serve') && ids.includes('runs:compare'), `commands found: ${ids.join(', ')}`)
  const without = commands.filter((c) => (c.examples ?? []).length === 0).map((c) => c.id)
  assert.deepEqual(without, [], 'commands without static examples')
  const reference = await readFile(REFERENCE, 'utf8')
  for (const command of commands) {
    const heading = reference.indexOf(`## \`ml ${command.id.replaceAll(':', ' ')}`)
    assert.ok(heading >= 0, `${command.id} is missing from docs/commands.md`)
    const next = reference.indexOf('\n## ', heading + 1)
    assert.match(reference.slice(heading, next < 0 ? undefined : next), /\nEXAMPLES\n/, `${command.id} shows no examples in docs/commands.md`)
  }
})
