// Loading ml.yaml: YAML parsing, validation with one error listing every problem, path resolution
// relative to the config file, and overrides from flags / ML_* environment variables.
import path from 'node:path'
import {parseDocument} from 'yaml'
import {z} from 'zod'
import {isRemote, parentOf, readText, resolveLocation} from '../storage/index.js'
import {UserError} from '../errors.js'
import {closest} from '../ui/did-you-mean.js'
import {ConfigSchema, type MlConfig} from './schema.js'

export const DEFAULT_CONFIG_PATH = 'ml.yaml'

/** One problem found in a config file. */
export interface ConfigIssue {
  /** Dotted path of the key, e.g. `train.batchSize` (empty for the whole file). */
  path: string
  message: string
}

export interface LoadedConfig {
  config: MlConfig
  /** Absolute path (or gs:// URI) of the file that was read. */
  file: string
  /** Directory relative paths in the config are resolved against. */
  baseDir: string
}

function valueAt(input: unknown, keys: PropertyKey[]): unknown {
  let value: unknown = input
  for (const key of keys) {
    if (value === null || typeof value !== 'object') return undefined
    value = (value as Record<PropertyKey, unknown>)[key]
  }
  return value
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing'
  const json = JSON.stringify(value)
  return json.length > 60 ? json.slice(0, 57) + '...' : json
}

type JsonSchemaNode = {properties?: Record<string, JsonSchemaNode>; items?: JsonSchemaNode; anyOf?: JsonSchemaNode[]; oneOf?: JsonSchemaNode[]; allOf?: JsonSchemaNode[]; $ref?: string}

let schemaCache: JsonSchemaNode | undefined

/** The keys the schema allows at a path of the config (all variants of a union), for "did you mean". */
export function knownKeys(keys: readonly PropertyKey[]): string[] {
  const root = (schemaCache ??= configJsonSchema() as JsonSchemaNode)
  const defs = ((root as Record<string, unknown>).$defs ?? (root as Record<string, unknown>).definitions ?? {}) as Record<string, JsonSchemaNode>
  const variants = (node: JsonSchemaNode | undefined, depth = 0): JsonSchemaNode[] => {
    if (!node || depth > 8) return []
    if (node.$ref) return variants(defs[node.$ref.split('/').at(-1)!], depth + 1)
    return [node, ...[...(node.anyOf ?? []), ...(node.oneOf ?? []), ...(node.allOf ?? [])].flatMap((n) => variants(n, depth + 1))]
  }
  let nodes = variants(root)
  for (const key of keys) {
    nodes = nodes.flatMap((n) => variants(typeof key === 'number' ? n.items : n.properties?.[String(key)]))
  }
  return [...new Set(nodes.flatMap((n) => Object.keys(n.properties ?? {})))]
}

/** Turns zod issues into `path: expected ..., got ...` lines. */
export function describeIssues(error: z.ZodError, input: unknown): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  for (const issue of error.issues) {
    const keyPath = issue.path.map(String).join('.')
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(issue.path)
      for (const key of issue.keys) {
        const guess = closest(key, known)
        const full = (k: string) => (keyPath ? `${keyPath}.${k}` : k)
        issues.push({
          path: full(key),
          message: guess ? `unknown key (did you mean \`${full(guess)}\`?)` : 'unknown key (check the spelling; `ml config schema` lists every key)',
        })
      }
      continue
    }
    if (issue.code === 'invalid_union' && 'note' in issue && issue.note === 'No matching discriminator') {
      const options = 'options' in issue && Array.isArray(issue.options) ? ` (expected one of: ${issue.options.join(', ')})` : ''
      issues.push({path: keyPath, message: `unknown type ${describeValue(valueAt(input, issue.path))}${options}`})
      continue
    }
    const got = valueAt(input, issue.path)
    let message = issue.message
    if (issue.code === 'invalid_type' && got === undefined) message = `${message.replace(/^Invalid input: /, '')} (missing)`
    else if (issue.code !== 'custom') message = `${message.replace(/^Invalid input: /, '')}, got ${describeValue(got)}`
    issues.push({path: keyPath, message})
  }
  return issues
}

export function formatIssues(issues: ConfigIssue[]): string {
  return issues.map((issue) => `  ${issue.path || '(file)'}: ${issue.message}`).join('\n')
}

/** Validates an already-parsed config object. Throws a UserError listing every problem. */
export function validateConfig(input: unknown, source = 'config'): MlConfig {
  const result = ConfigSchema.safeParse(input ?? {})
  if (!result.success) {
    const issues = describeIssues(result.error, input)
    throw new UserError(`${source} is invalid (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${formatIssues(issues)}`, {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      details: {file: source, issues},
      suggestions: ['Run `ml config schema` for the list of keys, or `ml init` for a commented starter.'],
    })
  }
  return result.data
}

/** Parses YAML text; syntax errors name the line and column. */
export function parseConfigText(text: string, source: string): unknown {
  const document = parseDocument(text, {prettyErrors: true})
  if (document.errors.length > 0) {
    const lines = text.split(/\r?\n/)
    const issues = document.errors.map((error) => {
      // yaml's first line ends "at line L, column C:" before its own excerpt: said once, here, with ours.
      const what = (error.message.split('\n')[0] ?? error.message).replace(/\s+at line \d+, column \d+:?\s*$/, '').replace(/:\s*$/, '')
      const at = error.linePos?.[0]
      if (!at) return {path: '', message: what}
      // An error at the end of the file (an unclosed bracket) points at the last line that has text.
      let n = at.line
      let col = at.col
      while (n > 1 && !(lines[n - 1] ?? '').trim()) col = (lines[--n - 1] ?? '').length + 1
      const source = lines[n - 1] ?? ''
      return {path: '', message: `line ${at.line}, column ${at.col}: ${what}`, line: at.line, column: at.col, excerpt: `${source}\n${' '.repeat(Math.max(0, col - 1))}^`}
    })
    const shown = issues.map((i) => `  ${i.message}${'excerpt' in i ? `\n${i.excerpt!.split('\n').map((l) => `    ${l}`).join('\n')}` : ''}`).join('\n')
    throw new UserError(`${source} is not valid YAML:\n${shown}`, {
      code: 'CONFIG_YAML',
      exit: 'usage',
      details: {file: source, issues},
    })
  }
  return document.toJS()
}

/** Sets `a.b.c = value` in a plain object tree (used for flag and ML_* overrides). */
export function setPath(target: Record<string, unknown>, dotted: string, value: unknown): void {
  const keys = dotted.split('.')
  let node = target
  for (const key of keys.slice(0, -1)) {
    const next = node[key]
    if (next === null || typeof next !== 'object' || Array.isArray(next)) node[key] = {}
    node = node[key] as Record<string, unknown>
  }
  node[keys.at(-1)!] = value
}

/**
 * Reads, overrides and validates a config file. `overrides` maps dotted keys to values (undefined
 * values are skipped), applied before validation so that a bad flag value is reported like a bad key.
 */
export async function loadConfig(file: string, overrides: Record<string, unknown> = {}): Promise<LoadedConfig> {
  const absolute = resolveLocation(file)
  let text: string
  try {
    text = await readText(absolute)
  } catch (error) {
    // Cloud Storage failures (credentials, permissions) already say what to do.
    if (error instanceof UserError) throw error
    const code = (error as NodeJS.ErrnoException).code
    throw new UserError(
      code === 'ENOENT' ? `config file ${file} not found` : `cannot read config file ${file}: ${(error as Error).message}`,
      {
        code: 'CONFIG_NOT_FOUND',
        exit: 'usage',
        cause: error,
        suggestions: ['Create one with `ml init`, or pass --config <file> (env ML_CONFIG).'],
      },
    )
  }
  const raw = parseConfigText(text, file)
  const input = (raw ?? {}) as Record<string, unknown>
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new UserError(`${file} must be a YAML mapping (key: value), not ${describeValue(raw)}`, {code: 'CONFIG_INVALID'})
  }
  for (const [key, value] of Object.entries(overrides)) if (value !== undefined) setPath(input, key, value)
  const config = validateConfig(input, file)
  return {config, file: absolute, baseDir: parentOf(absolute)}
}

/**
 * Resolves a config path (relative to the config file's folder) unless it is absolute or a URI. A
 * config read from gs:// resolves relative paths under its own prefix.
 */
export function resolvePath(loaded: Pick<LoadedConfig, 'baseDir'>, p: string): string {
  if (isRemote(p) || path.isAbsolute(p)) return p
  if (isRemote(loaded.baseDir)) {
    const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(loaded.baseDir)![0]
    return scheme + path.posix.join(loaded.baseDir.slice(scheme.length), p)
  }
  return path.resolve(loaded.baseDir, p)
}

/** JSON Schema of ml.yaml, for editor completion (yaml-language-server). */
export function configJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(ConfigSchema, {io: 'input', unrepresentable: 'any'}) as Record<string, unknown>
}
