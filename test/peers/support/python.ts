// The Python peers: the venv that scripts/peers/python.sh made from requirements.txt and
// constraints.txt, and a runner for the check scripts in test/peers/python/ that print one JSON object.
import {execFile} from 'node:child_process'
import path from 'node:path'
import {promisify} from 'node:util'
import {CACHE, peerSkip, ROOT, stampOf} from './peers.js'

export const PYTHON = path.join(CACHE, `python-${stampOf('requirements.txt', 'constraints.txt')}`, 'bin', 'python')
/** Why the Python peer tests cannot run here, or undefined (throws under CI=true). */
export const pythonSkip = (): string | undefined => peerSkip('The Python peers (TensorFlow, ONNX, Triton and KServe clients)', path.join(PYTHON, '..', '..', '.complete'), 'python.sh')

/** Runs test/peers/python/<script> with `args`; its stdout must be one JSON object. */
export async function runPython<T>(script: string, args: string[], options: {env?: NodeJS.ProcessEnv; timeoutMs?: number} = {}): Promise<T> {
  const file = path.join(ROOT, 'test', 'peers', 'python', script)
  let stdout: string
  try {
    ;({stdout} = await promisify(execFile)(PYTHON, [file, ...args], {
      env: {...process.env, TF_CPP_MIN_LOG_LEVEL: '2', PYTHONHASHSEED: '0', ...options.env},
      maxBuffer: 256 * 1024 * 1024,
      timeout: options.timeoutMs ?? 600_000,
    }))
  } catch (error) {
    const e = error as {stderr?: string; message: string}
    throw new Error(`${script} failed: ${e.message}\n${e.stderr ?? ''}`)
  }
  return JSON.parse(stdout) as T
}
