// `ml --version --json`: the version as one JSON object, as every other --json output is.
import type {Hook} from '@oclif/core'

const hook: Hook<'init'> = async function (options) {
  const all = [options.id, ...options.argv].filter((a): a is string => a !== undefined)
  if (!all.includes('--version') || !all.includes('--json') || all.some((a) => !a.startsWith('-'))) return
  const {config} = options
  const version = {name: config.bin, package: config.name, version: config.version, node: process.version, platform: `${config.platform}-${config.arch}`}
  process.stdout.write(JSON.stringify(version) + '\n')
  // oclif would print its own version line next: nothing else is to run.
  process.exit(0)
}

export default hook
