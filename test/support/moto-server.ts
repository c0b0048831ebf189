// Starts moto's server mode (the AWS emulator: S3, Kinesis, SageMaker) on an ephemeral 127.0.0.1 port
// for a test file, and stops it. moto comes from scripts/aws/moto-venv.sh (a pinned venv outside git);
// when it is missing the harness fails with what to run: a missing emulator is never a skip.
import {spawn, type ChildProcess} from 'node:child_process'
import {existsSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/** Where scripts/aws/moto-venv.sh puts moto_server (ML_MOTO_SERVER overrides). */
export function motoServerPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ML_MOTO_SERVER) return env.ML_MOTO_SERVER
  const cache = env.ML_PEERS_CACHE || path.join(os.homedir(), '.cache', 'ml-peers')
  return path.join(cache, 'moto-venv', 'bin', 'moto_server')
}

/** Fake credentials and region for the AWS SDK clients: moto accepts any, and nothing reaches AWS. */
export const AWS_TEST_ENV = {
  AWS_ACCESS_KEY_ID: 'testing',
  AWS_SECRET_ACCESS_KEY: 'testing',
  AWS_REGION: 'us-east-1',
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  // Nothing may look for a profile file or an instance metadata server.
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_CONFIG_FILE: '/nonexistent/aws-config',
  AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
}

export class MotoServer {
  private constructor(
    readonly url: string,
    private readonly child: ChildProcess,
    private readonly exited: Promise<void>,
  ) {}

  static async start(options: {timeoutMs?: number} = {}): Promise<MotoServer> {
    const binary = motoServerPath()
    if (!existsSync(binary)) {
      throw new Error(`moto_server not found at ${binary}: run scripts/aws/moto-venv.sh (installs pinned moto[server] into a venv; .ci/run does it)`)
    }
    // -p 0: the kernel picks a free port, and werkzeug prints the one it bound.
    const child = spawn(binary, ['-H', '127.0.0.1', '-p', '0'], {stdio: ['ignore', 'pipe', 'pipe'], env: {...process.env, ...AWS_TEST_ENV, PYTHONUNBUFFERED: '1'}})
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    let output = ''
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`moto_server did not start within ${options.timeoutMs ?? 30_000} ms:\n${output}`)), options.timeoutMs ?? 30_000)
      const fail = (error: Error) => {
        clearTimeout(timer)
        child.kill('SIGKILL')
        reject(error)
      }
      const onData = (chunk: Buffer) => {
        output += chunk.toString()
        const match = /Running on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
        if (match) {
          clearTimeout(timer)
          resolve(match[1]!)
        }
      }
      child.stdout!.on('data', onData)
      child.stderr!.on('data', onData)
      child.once('exit', (code) => fail(new Error(`moto_server exited (${code}) before it was ready:\n${output}`)))
    })
    // The banner comes before the socket serves: wait for an answer from the emulator's own API.
    const server = new MotoServer(url, child, exited)
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await fetch(`${url}/moto-api/data.json`)
        if (response.ok) break
      } catch (error) {
        if (attempt >= 200) {
          await server.close()
          throw error
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    // Keep draining its log so that a full pipe never blocks it.
    child.stdout!.resume()
    child.stderr!.resume()
    return server
  }

  /** Drops every bucket, stream and job (moto's reset API). */
  async reset(): Promise<void> {
    const response = await fetch(`${this.url}/moto-api/reset`, {method: 'POST'})
    if (!response.ok) throw new Error(`moto reset failed: ${response.status}`)
  }

  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM')
    await this.exited
  }
}
