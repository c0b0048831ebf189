// Following a training run: its run.json and metrics.jsonl (local, gs:// or s3://, through the storage layer),
// turned into progress, throughput and the curves the dashboard and PNG charts draw.
import {isRemote} from '../storage/index.js'
import {readEpochMetrics, readRunInfo, resolveRunDir, type EpochMetrics, type RunStatus} from '../model/run-dir.js'

export interface RunSnapshot {
  runId: string
  dir: string
  status: RunStatus
  backend: string
  epochs: number
  epochsCompleted: number
  createdAt: string
  updatedAt: string
  metrics: EpochMetrics[]
  latest: EpochMetrics | null
  /** Images/s of the last epoch. */
  imagesPerSec: number | null
  /** Mean epoch time times the epochs left; null once finished or before the first epoch. */
  etaSeconds: number | null
  best: {epoch: number; valAccuracy: number} | null
  error?: string
}

/** Resolves `--run`: a run directory, a run id under the runs folder, or a gs:// run directory. */
export async function resolveRun(ref: string | undefined, runsDir: string): Promise<string> {
  if (ref && isRemote(ref)) return ref.replace(/\/+$/, '')
  return resolveRunDir(runsDir, ref)
}

export async function readRun(dir: string): Promise<RunSnapshot> {
  const [info, metrics] = await Promise.all([readRunInfo(dir), readEpochMetrics(dir)])
  const latest = metrics.at(-1) ?? null
  const seconds = metrics.map((m) => m.seconds).filter((s) => Number.isFinite(s))
  const meanEpoch = seconds.length ? seconds.reduce((a, b) => a + b, 0) / seconds.length : null
  const left = Math.max(0, info.epochs - info.epochsCompleted)
  let best: RunSnapshot['best'] = null
  for (const m of metrics) if (m.valAccuracy !== undefined && (best === null || m.valAccuracy > best.valAccuracy)) best = {epoch: m.epoch, valAccuracy: m.valAccuracy}
  return {
    runId: info.runId,
    dir,
    status: info.status,
    backend: info.backend,
    epochs: info.epochs,
    epochsCompleted: info.epochsCompleted,
    createdAt: info.createdAt,
    updatedAt: info.updatedAt,
    metrics,
    latest,
    imagesPerSec: latest?.imagesPerSec ?? null,
    etaSeconds: info.status === 'running' && meanEpoch !== null ? meanEpoch * left : null,
    best,
    ...(info.error ? {error: info.error} : {}),
  }
}
