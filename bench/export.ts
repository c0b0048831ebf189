// Export sizes, accuracy change and time per format and quantization for a model trained on real
// MNIST digits, printed as one JSON object: `node dist/bench/export.js [preset] [trainImages] [epochs]`.
import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {loadConfig} from '../src/lib/config/load.js'
import {runIngest} from '../src/lib/data/ingest.js'
import {runExport} from '../src/lib/export/index.js'
import {runTraining} from '../src/lib/train/trainer.js'
import {mnistFolders, writeMnistConfig} from '../test/support/fixtures.js'

const preset = (process.argv[2] ?? 'cnn-small') as 'mlp' | 'cnn-tiny' | 'cnn-small' | 'cnn'
const trainImages = Number(process.argv[3] ?? 6000)
const epochs = Number(process.argv[4] ?? 2)
const TEST_IMAGES = 2000

const dir = await mkdtemp(path.join(os.tmpdir(), 'ml-bench-export-'))
try {
  await mnistFolders(dir, trainImages, TEST_IMAGES)
  const file = await writeMnistConfig(dir, {model: {preset}, train: {epochs, batchSize: 64, learningRate: 0.002}})
  const loaded = await loadConfig(file)
  await runIngest({config: loaded.config, baseDir: loaded.baseDir})
  const trainStart = performance.now()
  const run = await runTraining({loaded, runId: 'bench'})
  const trainSeconds = (performance.now() - trainStart) / 1000
  const rows = []
  for (const quantize of ['none', 'float16', 'uint8'] as const) {
    const start = performance.now()
    const result = await runExport({loaded, quantize, formats: ['tfjs', 'onnx', 'triton'], dir: path.join(dir, `models-${quantize}`)})
    const seconds = (performance.now() - start) / 1000
    for (const f of result.formats) {
      rows.push({
        quantize,
        format: f.format,
        bytes: f.bytes,
        unquantizedBytes: f.unquantizedBytes,
        ratio: Number((f.bytes / f.unquantizedBytes).toFixed(3)),
        accuracy: f.accuracy,
        accuracyDelta: f.accuracyDelta,
        maxAbsDiff: f.maxAbsDiff,
        exportSeconds: Number(seconds.toFixed(2)),
      })
    }
  }
  console.log(JSON.stringify({preset, trainImages, testImages: TEST_IMAGES, epochs, trainSeconds: Number(trainSeconds.toFixed(1)), baselineAccuracy: rows[0]!.accuracy, valAccuracy: run.valAccuracy, rows}, null, 2))
} finally {
  await rm(dir, {recursive: true, force: true})
}
