// Runs the real `ml` binary (bin/run.cjs over dist/) as a child process, the way users and CI do.
import {spawn, type ChildProcess} from 'node:child_process'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
export const BIN = path.join(ROOT, 'bin', 'run.cjs')

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export function startCli(args: string[], options: {cwd?: string; env?: NodeJS.ProcessEnv} = {}): {child: ChildProcess; done: Promise<CliResult>} {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: options.cwd ?? ROOT,
    env: {...process.env, NO_COLOR: '1', ...options.env},
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({code, signal, stdout, stderr}))
  })
  return {child, done}
}

export async function runCli(args: string[], options: {cwd?: string; env?: NodeJS.ProcessEnv} = {}): Promise<CliResult> {
  return startCli(args, options).done
}

/** Runs with --json and parses stdout, which must be exactly one JSON object. */
export async function runJson<T = Record<string, unknown>>(args: string[], options: {cwd?: string; env?: NodeJS.ProcessEnv} = {}): Promise<{code: number | null; json: T; stderr: string}> {
  const result = await runCli([...args, '--json'], options)
  let json: T
  try {
    json = JSON.parse(result.stdout) as T
  } catch {
    throw new Error(`stdout of \`ml ${args.join(' ')} --json\` is not one JSON object (exit ${result.code}):\n${result.stdout}\n--- stderr:\n${result.stderr}`)
  }
  return {code: result.code, json, stderr: result.stderr}
}
