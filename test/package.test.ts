// What `npm pack` publishes, and what installing it fetches: the install a new user gets.
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {describe, it} from 'node:test'
import {OPTIONAL_PACKAGES, PACKAGE_NAME} from '../src/lib/optional.js'
import {ROOT} from './support/cli.js'

interface PackageJson {
  name: string
  bin: Record<string, string>
  license: string
  dependencies: Record<string, string>
  devDependencies: Record<string, string>
  peerDependencies?: Record<string, string>
  peerDependenciesMeta?: Record<string, {optional?: boolean}>
}

const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as PackageJson

describe('the published package', () => {
  it('has a name of its own on npm and the `ml` binary', () => {
    // `ml` on the npm registry is an unrelated library: npx would run it.
    assert.notEqual(pkg.name, 'ml')
    assert.equal(pkg.name, PACKAGE_NAME)
    assert.deepEqual(Object.keys(pkg.bin), ['ml'])
  })

  it('installs none of the heavy or downloading packages unless asked', () => {
    for (const name of [...Object.keys(OPTIONAL_PACKAGES), '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu']) {
      assert.equal(pkg.dependencies[name], undefined, `${name} must not be a dependency`)
    }
    for (const name of Object.keys(OPTIONAL_PACKAGES)) {
      assert.ok(pkg.peerDependencies?.[name], `${name} is an optional peer dependency`)
      assert.equal(pkg.peerDependenciesMeta?.[name]?.optional, true, `${name} is marked optional`)
      assert.ok(pkg.devDependencies[name], `${name} is installed in a checkout (tests, quickstart)`)
    }
  })

  it('depends on the parts of TensorFlow.js it uses, not the @tensorflow/tfjs bundle, all at one exact version', async () => {
    assert.equal(pkg.dependencies['@tensorflow/tfjs'], undefined, 'the bundle (WebGL, tfjs-data, browser builds) is not installed for users')
    const tensorflow = Object.entries(pkg.dependencies).filter(([name]) => name.startsWith('@tensorflow/'))
    assert.deepEqual(tensorflow.map(([name]) => name).sort(),
      ['@tensorflow/tfjs-backend-cpu', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-converter', '@tensorflow/tfjs-core', '@tensorflow/tfjs-layers'])
    // dist/src/lib/engine/tfjs-registrations.cjs is built from tfjs-core's files of this very version.
    const versions = new Set(tensorflow.map(([, range]) => range))
    assert.equal(versions.size, 1, `one version for all: ${[...versions].join(', ')}`)
    const [version] = versions
    assert.match(version!, /^\d+\.\d+\.\d+$/, 'an exact version, not a range')
    assert.equal(pkg.devDependencies['@tensorflow/tfjs'] ?? version, version, 'the bundle nsfwjs needs in a checkout is the same version')
    const dockerfile = await readFile(path.join(ROOT, 'configs', 'docker', 'Dockerfile'), 'utf8')
    assert.match(dockerfile, new RegExp(`ARG TFJS_VERSION=${version!.replace(/\./g, '\\.')}\\b`), 'the image adds tfjs-node-gpu of the same version')
  })

  it('ships a LICENSE and no source maps pointing at sources it does not ship', async () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']})
    const files = (JSON.parse(out) as Array<{files: Array<{path: string}>}>)[0]!.files.map((f) => f.path)
    assert.ok(files.includes('LICENSE'))
    assert.match(await readFile(path.join(ROOT, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0/)
    assert.equal(pkg.license, 'Apache-2.0')
    assert.deepEqual(files.filter((f) => f.endsWith('.map')), [])
    assert.deepEqual(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), [])
    assert.ok(files.includes('bin/run.cjs'))
    assert.ok(files.includes('dist/src/lib/engine/tfjs-registrations.cjs'), 'the TensorFlow.js gradients and chained methods are shipped')
    assert.ok(files.some((f) => f.startsWith('dist/src/commands/')))
  })
})
