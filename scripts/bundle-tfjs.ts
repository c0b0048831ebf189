// Builds dist/src/lib/engine/tfjs-registrations.cjs: TensorFlow.js core's gradient registrations
// (register_all_gradients) and chained tensor methods (t.argMax(), t.toFloat(), ...), which
// @tensorflow/tfjs-core's Node entry (dist/tf-core.node.js) leaves out and which only the whole
// @tensorflow/tfjs bundle (WebGL, tfjs-data, browser builds: 141 MB installed) otherwise brings.
//
// Core's ESM files cannot be loaded by Node directly (their relative imports have no extension),
// so esbuild bundles the two registration files and the gradient and chained-op files under them.
// Everything else they import from core (ops, the engine, the Tensor class, the gradient
// registry) is NOT copied: a plugin rewrites each such import to the same binding of the
// installed @tensorflow/tfjs-core package (required at run time), found by following core's own
// export statements, so that there is one engine, one Tensor class and one gradient registry.
// Internal helpers that core does not export (a few gradient-only ops such as avgPoolGrad) are
// copied; they are stateless functions calling the shared engine. The build fails if anything
// stateful (a file core's package.json lists under sideEffects) would be copied.
//
// Run after tsc by `npm run build`; the published package ships the output, and package.json pins
// every @tensorflow/* package to the exact version this was built from.
import {build, type Plugin} from 'esbuild'
import {existsSync, readFileSync, statSync} from 'node:fs'
import {mkdir, writeFile} from 'node:fs/promises'
import {createRequire} from 'node:module'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const require = createRequire(path.join(ROOT, 'package.json'))
const CORE = '@tensorflow/tfjs-core'
const CORE_DIR = path.dirname(require.resolve(`${CORE}/package.json`))
const DIST = path.join(CORE_DIR, 'dist')
export const OUTPUT = path.join(ROOT, 'dist', 'src', 'lib', 'engine', 'tfjs-registrations.cjs')

/** The files whose code is the point of the bundle: copied, never rewritten. */
const ENTRIES = ['register_all_gradients.js', 'public/chained_ops/register_all_chained_ops.js']
function isOwn(file: string): boolean {
  const rel = path.relative(DIST, file).split(path.sep).join('/')
  return ENTRIES.includes(rel) || rel.startsWith('gradients/') || rel.startsWith('public/chained_ops/')
}

// ---- core's export graph, read from its ESM files (tsc output: one statement per export form) ----

interface ModuleInfo {
  locals: Set<string>
  named: Map<string, {from?: string, name: string}>
  namespaces: Map<string, string>
  stars: string[]
  imports: Map<string, {from: string, name: string}>
}

const infos = new Map<string, ModuleInfo>()

function resolveIn(file: string, spec: string): string {
  if (!spec.startsWith('.')) return `package:${spec}` // another package (long, seedrandom): opaque here
  const base = path.resolve(path.dirname(file), spec)
  for (const candidate of [base, `${base}.js`, path.join(base, 'index.js')]) {
    if (candidate.endsWith('.js') && existsSync(candidate) && statSync(candidate).isFile()) return candidate
  }
  throw new Error(`cannot resolve ${spec} from ${file}`)
}

function specifiers(list: string): Array<[string, string]> {
  return list.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const [name, alias] = s.split(/\s+as\s+/)
    return [name!.trim(), (alias ?? name)!.trim()]
  })
}

function info(file: string): ModuleInfo {
  const known = infos.get(file)
  if (known) return known
  if (file.startsWith('package:')) return {locals: new Set(), named: new Map(), namespaces: new Map(), stars: [], imports: new Map()}
  const text = readFileSync(file, 'utf8')
  const m: ModuleInfo = {locals: new Set(), named: new Map(), namespaces: new Map(), stars: [], imports: new Map()}
  for (const [, name] of text.matchAll(/^export\s+(?:async\s+)?(?:function\*?|class|const|let|var)\s+([A-Za-z_$][\w$]*)/gm)) m.locals.add(name!)
  for (const [, list, from] of text.matchAll(/^export\s*\{([^}]*)\}\s*from\s*['"]([^'"]+)['"]/gm)) {
    for (const [name, alias] of specifiers(list!)) m.named.set(alias, {from: resolveIn(file, from!), name})
  }
  for (const [, ns, from] of text.matchAll(/^export\s*\*\s*as\s+([\w$]+)\s+from\s*['"]([^'"]+)['"]/gm)) m.namespaces.set(ns!, resolveIn(file, from!))
  for (const [, from] of text.matchAll(/^export\s*\*\s*from\s*['"]([^'"]+)['"]/gm)) m.stars.push(resolveIn(file, from!))
  for (const [, ns, from] of text.matchAll(/^import\s*\*\s*as\s+([\w$]+)\s+from\s*['"]([^'"]+)['"]/gm)) m.imports.set(ns!, {from: resolveIn(file, from!), name: '*'})
  for (const [, list, from] of text.matchAll(/^import\s*\{([^}]*)\}\s*from\s*['"]([^'"]+)['"]/gm)) {
    for (const [name, alias] of specifiers(list!)) m.imports.set(alias, {from: resolveIn(file, from!), name})
  }
  for (const [, list] of text.matchAll(/^export\s*\{([^}]*)\}\s*;/gm)) {
    for (const [name, alias] of specifiers(list!)) {
      const imported = m.imports.get(name)
      if (imported?.name === '*') m.namespaces.set(alias, imported.from)
      else if (imported) m.named.set(alias, imported)
      else m.named.set(alias, {name})
    }
  }
  infos.set(file, m)
  return m
}

/** Every name a module exports (following `export *`). */
function exportsOf(file: string, seen = new Set<string>()): Set<string> {
  const names = new Set<string>()
  if (seen.has(file)) return names
  seen.add(file)
  const m = info(file)
  for (const n of [...m.locals, ...m.named.keys(), ...m.namespaces.keys()]) names.add(n)
  for (const star of m.stars) for (const n of exportsOf(star, seen)) if (n !== 'default') names.add(n)
  return names
}

/** Where an exported binding is defined: "file#name", or "ns:file" for a namespace object. */
function origin(file: string, name: string, seen = new Set<string>()): string | undefined {
  const key = `${file}#${name}`
  if (seen.has(key)) return undefined
  seen.add(key)
  const m = info(file)
  const named = m.named.get(name)
  if (named) {
    if (named.from !== undefined) return named.name === '*' ? `ns:${named.from}` : origin(named.from, named.name, seen)
    return `${file}#${named.name}`
  }
  const ns = m.namespaces.get(name)
  if (ns !== undefined) return `ns:${ns}`
  if (m.locals.has(name)) return key
  for (const star of m.stars) {
    const found = origin(star, name, seen)
    if (found !== undefined) return found
  }
  return undefined
}

/** Each binding core's public entry exports, by origin: a top-level name, or `namespace.member`. */
function publicBindings(): Map<string, string> {
  const runtime = require(CORE) as Record<string, unknown>
  const index = path.join(DIST, 'index.js')
  const byOrigin = new Map<string, string>()
  const namespaces: Array<[string, string]> = []
  for (const name of exportsOf(index)) {
    if (!(name in runtime)) continue // a type-only or browser-only name the Node entry lacks
    const o = origin(index, name)
    if (o === undefined) continue
    if (o.startsWith('ns:')) namespaces.push([name, o.slice(3)])
    if (!byOrigin.has(o)) byOrigin.set(o, name)
  }
  for (const [ns, file] of namespaces) {
    const value = runtime[ns] as Record<string, unknown>
    for (const member of exportsOf(file)) {
      const o = origin(file, member)
      if (o !== undefined && !byOrigin.has(o) && member in value) byOrigin.set(o, `${ns}.${member}`)
    }
  }
  return byOrigin
}

/** Bindings core keeps internal but that must be the shared ones, not copies. */
const SHIMS: Record<string, string> = {
  // core's engine() returns its ENGINE (itself the global singleton every copy of core shares).
  'engine.js#ENGINE': 'export const ENGINE = core.engine();',
  // As core's own getGlobalTensorClass: the Tensor class registered first in the global map.
  'tensor.js#getGlobalTensorClass':
    'export function getGlobalTensorClass() { const m = globalThis._tfGlobals; return m != null && m.has("Tensor") ? m.get("Tensor") : core.Tensor; }',
}

function stateful(): (file: string) => boolean {
  const pkg = JSON.parse(readFileSync(path.join(CORE_DIR, 'package.json'), 'utf8')) as {sideEffects: string[]}
  const patterns = pkg.sideEffects.filter((p) => p.startsWith('./dist/')).map((p) =>
    new RegExp(`^${p.slice('./dist/'.length).replace(/[.]/g, '\\.').replace(/\*/g, '[^/]*')}$`))
  const always = ['global_util.js', 'kernel_registry.js', 'environment.js', 'tape.js', 'globals.js', 'base.js']
  return (file) => {
    const rel = path.relative(DIST, file).split(path.sep).join('/')
    return !isOwn(file) && (always.includes(rel) || patterns.some((re) => re.test(rel)))
  }
}

function corePlugin(byOrigin: Map<string, string>, isStateful: (file: string) => boolean): Plugin {
  return {
    name: 'tfjs-core-shared',
    setup(b) {
      b.onResolve({filter: /^@tensorflow\/tfjs-core$/}, () => ({path: CORE, external: true}))
      // One module that requires core once; every rewritten binding reads from it.
      b.onResolve({filter: /^core-root$/}, () => ({path: CORE, namespace: 'core-root'}))
      b.onLoad({filter: /.*/, namespace: 'core-root'}, () => ({contents: `export * from '${CORE}';`, loader: 'js', resolveDir: ROOT}))
      b.onResolve({filter: /^@tensorflow\/tfjs-core\/dist\//}, (args) =>
        ({path: resolveIn(path.join(CORE_DIR, 'x'), `./${args.path.slice(`${CORE}/`.length)}`)}))
      b.onResolve({filter: /^copy:/}, (args) => ({path: args.path.slice('copy:'.length)}))
      b.onResolve({filter: /^\./}, (args) => {
        if (!args.importer.startsWith(DIST)) return undefined
        const file = resolveIn(args.importer, args.path)
        // Relative names: the output's comments must not carry this machine's paths.
        return isOwn(file) ? {path: file} : {path: path.relative(ROOT, file), namespace: 'core-binding'}
      })
      b.onLoad({filter: /.*/, namespace: 'core-binding'}, (args) => {
        const file = path.resolve(ROOT, args.path)
        const lines = [`import * as core from 'core-root';`]
        for (const name of exportsOf(file)) {
          const o = origin(file, name)
          const shim = o === undefined ? undefined : SHIMS[path.relative(DIST, o).split(path.sep).join('/')]
          const pub = o === undefined ? undefined : byOrigin.get(o)
          if (pub !== undefined) lines.push(`export const ${name} = core.${pub};`)
          else if (shim !== undefined) lines.push(shim)
          // A stateful file's other bindings are left out: importing one fails the build ("No matching export").
          else if (!isStateful(file)) lines.push(`export {${name}} from ${JSON.stringify(`copy:${file}`)};`)
        }
        return {contents: lines.join('\n'), loader: 'js', resolveDir: path.dirname(file)}
      })
    },
  }
}

export async function bundleTfjsRegistrations(): Promise<{bytes: number, copied: string[]}> {
  const byOrigin = publicBindings()
  const isStateful = stateful()
  const version = (require(`${CORE}/package.json`) as {version: string}).version
  const result = await build({
    stdin: {contents: ENTRIES.map((e) => `import '${CORE}/dist/${e}';`).join('\n'), resolveDir: ROOT, loader: 'js'},
    bundle: true,
    absWorkingDir: ROOT,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    write: false,
    metafile: true,
    legalComments: 'eof', // tfjs-core's Apache-2.0 notices, once, at the end
    logLevel: 'silent',
    plugins: [corePlugin(byOrigin, isStateful)],
    banner: {js: `// Generated by scripts/bundle-tfjs.ts from ${CORE}@${version} (Apache-2.0): its gradients and chained tensor methods,\n// registered on the installed ${CORE} (one engine, one Tensor class, one gradient registry).\n"use strict";`},
  })
  const copied = Object.keys(result.metafile.inputs)
    .filter((i) => !/^core-(binding|root):/.test(i) && i !== '<stdin>')
    .map((i) => path.resolve(ROOT, i))
    .filter((f) => !isOwn(f))
  const bad = copied.filter(isStateful)
  if (bad.length > 0) throw new Error(`the TensorFlow.js registrations would copy stateful core files: ${bad.join(', ')}`)
  const text = result.outputFiles[0]!.text
  if (/\bclass (Tensor|Engine|Environment)\b/.test(text)) throw new Error('the TensorFlow.js registrations contain a copy of a core class')
  await mkdir(path.dirname(OUTPUT), {recursive: true})
  await writeFile(OUTPUT, text)
  return {bytes: Buffer.byteLength(text), copied: copied.map((f) => path.relative(DIST, f))}
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const {bytes, copied} = await bundleTfjsRegistrations()
  const quiet = process.argv.includes('--quiet')
  if (!quiet) console.error(`wrote ${path.relative(ROOT, OUTPUT)} (${(bytes / 1024).toFixed(0)} KiB; core internals copied: ${copied.join(', ') || 'none'})`)
}
