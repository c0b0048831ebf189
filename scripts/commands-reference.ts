// `npm run readme`: regenerates docs/commands.md, the reference of every command (usage, arguments,
// flags, description, examples), with `oclif readme` between its <!-- commands --> markers.
// `npm run readme:check` (and test/scripts/commands-reference.test.ts, part of `npm test`) fails when
// the file differs from what the commands say now, so the reference cannot go stale unnoticed.
// The reference is built from dist/ (the compiled commands): build first.
import {execFile} from 'node:child_process'
import {copyFile, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const REFERENCE = path.join(root, 'docs', 'commands.md')
const OCLIF = path.join(root, 'node_modules', 'oclif', 'bin', 'run.js')

/**
 * The reference as `oclif readme` writes it now. It runs on a temp copy of docs/commands.md, so
 * checking never touches the file; a fixed width keeps the wrapping the same on every terminal, and
 * the update check of the oclif tool is off (no network).
 */
export async function generateReference(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-reference-'))
  try {
    const copy = path.join(dir, 'commands.md')
    await copyFile(REFERENCE, copy)
    await promisify(execFile)(process.execPath, [OCLIF, 'readme', '--readme-path', copy, '--no-aliases'], {
      cwd: root,
      env: {...process.env, COLUMNS: '120', NO_COLOR: '1', OCLIF_SKIP_NEW_VERSION_CHECK: 'true'},
      maxBuffer: 16 << 20,
    })
    return await readFile(copy, 'utf8')
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
}

async function main(): Promise<void> {
  const check = process.argv.includes('--check')
  const [current, fresh] = await Promise.all([readFile(REFERENCE, 'utf8'), generateReference()])
  if (current === fresh) {
    process.stderr.write(`${path.relative(process.cwd(), REFERENCE)} is up to date\n`)
    return
  }
  if (check) {
    process.stderr.write(`${path.relative(process.cwd(), REFERENCE)} is stale: a command's flags, description or examples changed. Run \`npm run readme\` and commit the result.\n`)
    process.exitCode = 1
    return
  }
  await writeFile(REFERENCE, fresh)
  process.stderr.write(`${path.relative(process.cwd(), REFERENCE)} regenerated\n`)
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main()
