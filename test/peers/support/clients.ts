// What the real-client tests (serve-clients: HTTP, grpc-clients: gRPC) share: the digits model served
// in process, its test images written where a Python client can read them (one FP32 batch file and
// one PNG file per image), and the checks of an answer against the in-process prediction.
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {maxAbsDiff} from '../../../src/lib/export/onnx-runtime.js'
import type {ServeOptions} from '../../../src/lib/serve/options.js'
import {tempDir} from '../../support/fixtures.js'
import {startDigitsServer, type DigitsServer} from '../../support/serve-fixtures.js'

/** How far a client's probability may stand from the in-process one. */
export const TOLERANCE = 1e-5

export interface ServedForClients {
  served: DigitsServer
  /** The test images as one float32 batch (n x 28 x 28 x 1, little-endian), for `input n` arguments. */
  input: string
  /** The same images as PNG files. */
  pngs: string[]
  n: number
  /** Asserts that `actual` (all images' probabilities, flat) equals the in-process prediction. */
  close(actual: number[], label: string): void
  /** Asserts that each row (one per image) is the top 3 classes as "score:index", best first. */
  top3(rows: string[][]): void
  /** Stops the server and removes the files. */
  stop(): Promise<void>
}

export async function serveForClients(prefix: string, overrides: Partial<ServeOptions> = {}): Promise<ServedForClients> {
  const served = await startDigitsServer(prefix, overrides)
  const {dir, cleanup} = await tempDir(`${prefix}in-`)
  const n = served.floats.length
  const batch = new Float32Array(n * served.floats[0]!.length)
  served.floats.forEach((f, i) => batch.set(f, i * f.length))
  const input = path.join(dir, 'images.f32')
  await writeFile(input, Buffer.from(batch.buffer))
  const pngs: string[] = []
  for (const [i, d] of served.digits.entries()) {
    const file = path.join(dir, `${i}.png`)
    await writeFile(file, d.png)
    pngs.push(file)
  }
  return {
    served,
    input,
    pngs,
    n,
    close(actual, label) {
      const diff = maxAbsDiff(Float32Array.from(actual), served.expected)
      assert.ok(diff <= TOLERANCE, `${label}: differs from the in-process prediction by ${diff}`)
    },
    top3(rows) {
      const k = served.expected.length / n
      assert.equal(rows.length, n)
      rows.forEach((row, i) => {
        const probs = Array.from(served.expected.subarray(i * k, (i + 1) * k))
        const top = probs.map((p, c) => [p, c] as const).sort((a, b) => b[0] - a[0]).slice(0, 3)
        assert.equal(row.length, 3)
        row.forEach((entry, j) => {
          const [score, index] = entry.split(':')
          assert.equal(Number(index), top[j]![1], `image ${i} rank ${j}: ${entry}`)
          assert.ok(Math.abs(Number(score) - top[j]![0]) <= 1e-4, `image ${i} rank ${j}: ${entry}`)
        })
      })
    },
    async stop() {
      await served.close()
      await cleanup()
    },
  }
}
