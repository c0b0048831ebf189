// Prometheus metrics of one server process (prom-client): ml_serve_* histograms for latency and batch
// sizes, Triton's nv_inference_* names for existing dashboards, and Node's default process metrics.
import {collectDefaultMetrics, Counter, Gauge, Histogram, Registry} from 'prom-client'
import {EVENT_LOOP_SAMPLE_MS, SERVE, TRITON} from '../metric-names.js'
import {imageSize, meanBrightness, topClasses} from './input-stats.js'

type VersionLabels = 'model' | 'version'

// Seconds, from 0.5 ms (a warm batch of one small image) to 10 s (the default request timeout).
const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const BATCH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024]
// Drift: mean pixel value in twentieths, and the sizes images are sent at (before resizing).
const BRIGHTNESS_BUCKETS = Array.from({length: 20}, (_, i) => (i + 1) / 20)
const SIZE_BUCKETS = [8, 16, 28, 32, 64, 128, 224, 256, 512, 1024, 2048, 4096, 8192]

export class ServeMetrics {
  readonly registry = new Registry()

  readonly requests = new Counter({
    name: SERVE.requests,
    help: 'HTTP requests and gRPC calls by model, version, protocol (kserve, tfserving, raw, grpc, health, metrics, other) and status code (a gRPC call: the HTTP status of the same failure).',
    labelNames: ['model', 'version', 'protocol', 'status'] as const,
    registers: [this.registry],
  })
  readonly requestDuration = new Histogram({
    name: SERVE.requestDuration,
    help: 'Time from the request line to the last byte of the response.',
    labelNames: ['model', 'version', 'protocol'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  })
  readonly queueDuration = new Histogram({
    name: SERVE.queueDuration,
    help: 'Time a request waited in the batching queue before its batch started.',
    labelNames: ['model', 'version'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  })
  readonly inferenceDuration = new Histogram({
    name: SERVE.inferenceDuration,
    help: 'Compute time of one batch in a model instance (worker thread).',
    labelNames: ['model', 'version'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  })
  readonly batchSize = new Histogram({
    name: SERVE.batchSize,
    help: 'Images per executed batch.',
    labelNames: ['model', 'version'] as const,
    buckets: BATCH_BUCKETS,
    registers: [this.registry],
  })
  readonly inFlight = new Gauge({
    name: SERVE.inFlight,
    help: 'Requests received and not yet answered.',
    registers: [this.registry],
  })
  readonly queueDepth = new Gauge({
    name: SERVE.queueDepth,
    help: 'Images waiting in the batching queue.',
    labelNames: ['model', 'version'] as const,
    registers: [this.registry],
  })
  readonly modelLoads = new Counter({
    name: SERVE.modelLoads,
    help: 'Model version loads by result (success, failure) and unloads (unloaded).',
    labelNames: ['model', 'version', 'result'] as const,
    registers: [this.registry],
  })
  readonly modelReady = new Gauge({
    name: SERVE.modelReady,
    help: '1 while a model version is loaded and serving.',
    labelNames: ['model', 'version'] as const,
    registers: [this.registry],
  })
  readonly clientAborts = new Counter({
    name: SERVE.clientAborts,
    help: 'Requests whose client closed the connection before the answer, by protocol.',
    labelNames: ['protocol'] as const,
    registers: [this.registry],
  })
  readonly instanceRestarts = new Counter({
    name: SERVE.instanceRestarts,
    help: 'Model instances (worker threads) replaced after they died.',
    registers: [this.registry],
  })
  // Drift (`ml monitor --check` compares the class shares with the training priors).
  readonly predictions = new Counter({
    name: SERVE.predictions,
    help: 'Images answered, by top-1 class.',
    labelNames: ['model', 'version', 'class'] as const,
    registers: [this.registry],
  })
  readonly inputBrightness = new Histogram({
    name: SERVE.inputBrightness,
    help: 'Mean pixel value (0-1) of each image after decoding and resizing as in training.',
    labelNames: ['model', 'version'] as const,
    buckets: BRIGHTNESS_BUCKETS,
    registers: [this.registry],
  })
  readonly inputWidth = new Histogram({
    name: SERVE.inputWidth,
    help: 'Width of each image as sent, before resizing.',
    labelNames: ['model', 'version'] as const,
    buckets: SIZE_BUCKETS,
    registers: [this.registry],
  })
  readonly inputHeight = new Histogram({
    name: SERVE.inputHeight,
    help: 'Height of each image as sent, before resizing.',
    labelNames: ['model', 'version'] as const,
    buckets: SIZE_BUCKETS,
    registers: [this.registry],
  })

  // Canary splits (`ml monitor --check` compares the canary version with the stable one).
  readonly trafficSplit = new Gauge({
    name: SERVE.trafficSplit,
    help: 'Share (percent) of requests without a version that a canary split sends to this version, by role (stable, canary).',
    labelNames: ['model', 'version', 'role'] as const,
    // Every process of a cluster splits the same way: the aggregate is one process's share, not a sum.
    aggregator: 'max',
    registers: [this.registry],
  })

  // Triton's names and types: counters, durations as cumulative microseconds.
  readonly nvSuccess = this.nvCounter(TRITON.success, 'Number of successful inference requests, all batch sizes')
  readonly nvFailure = this.nvCounter(TRITON.failure, 'Number of failed inference requests, all batch sizes')
  readonly nvCount = this.nvCounter(TRITON.count, 'Number of inferences performed (images)')
  readonly nvExecCount = this.nvCounter(TRITON.execCount, 'Number of model executions performed (batches)')
  readonly nvRequestUs = this.nvCounter(TRITON.requestUs, 'Cumulative inference request duration in microseconds')
  readonly nvQueueUs = this.nvCounter(TRITON.queueUs, 'Cumulative inference queuing duration in microseconds')
  readonly nvComputeUs = this.nvCounter(TRITON.computeUs, 'Cumulative compute inference duration in microseconds')

  constructor(options: {defaultMetrics?: boolean} = {}) {
    // Process CPU, memory, GC, handles and event-loop lag (the lag shows whether anything blocks it).
    if (options.defaultMetrics !== false) collectDefaultMetrics({register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS})
  }

  private nvCounter(name: string, help: string): Counter<VersionLabels> {
    return new Counter({name, help, labelNames: ['model', 'version'] as const, registers: [this.registry]})
  }

  /** Records one inference request's outcome under both naming schemes. */
  inferenceRequest(model: string, version: string, ok: boolean, seconds: number): void {
    const labels = {model, version}
    if (ok) {
      this.nvSuccess.inc(labels)
      this.nvRequestUs.inc(labels, Math.round(seconds * 1e6))
    } else this.nvFailure.inc(labels)
  }

  /** Records one executed batch. */
  batch(model: string, version: string, images: number, computeSeconds: number): void {
    const labels = {model, version}
    this.batchSize.observe(labels, images)
    this.inferenceDuration.observe(labels, computeSeconds)
    this.nvCount.inc(labels, images)
    this.nvExecCount.inc(labels)
    this.nvComputeUs.inc(labels, Math.round(computeSeconds * 1e6))
  }

  queued(model: string, version: string, seconds: number): void {
    const labels = {model, version}
    this.queueDuration.observe(labels, seconds)
    this.nvQueueUs.inc(labels, Math.round(seconds * 1e6))
  }

  /** Counts the top-1 class of each of the `n` rows of probabilities a model answered. */
  predicted(model: string, version: string, labels: readonly string[], probabilities: Float32Array, n: number): void {
    for (const index of topClasses(probabilities, n, labels.length)) this.predictions.inc({model, version, class: labels[index] ?? String(index)})
  }

  /** Records one received image: its size as sent (when its header tells) and its mean brightness. */
  input(model: string, version: string, bytes: Uint8Array, input: Float32Array, scale: number, offset: number): void {
    const labels = {model, version}
    const brightness = meanBrightness(input, scale, offset)
    if (Number.isFinite(brightness)) this.inputBrightness.observe(labels, brightness)
    const size = imageSize(bytes)
    if (size) {
      this.inputWidth.observe(labels, size.width)
      this.inputHeight.observe(labels, size.height)
    }
  }
}
