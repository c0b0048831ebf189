// The metric names, spelled once: what `ml serve` exports (serve/metrics.ts registers them, the monitor
// reads them), Node's default process metrics, and the thresholds the monitor applies to status codes.
// A module of the base layer, so that serve and monitor share names without importing each other.

export const SERVE = {
  requests: 'ml_serve_requests_total',
  requestDuration: 'ml_serve_request_duration_seconds',
  queueDuration: 'ml_serve_queue_duration_seconds',
  inferenceDuration: 'ml_serve_inference_duration_seconds',
  batchSize: 'ml_serve_batch_size',
  inFlight: 'ml_serve_in_flight_requests',
  queueDepth: 'ml_serve_queue_depth',
  modelLoads: 'ml_serve_model_loads_total',
  modelReady: 'ml_serve_model_ready',
  instanceRestarts: 'ml_serve_instance_restarts_total',
  processRestarts: 'ml_serve_process_restarts_total',
  clientAborts: 'ml_serve_client_aborts_total',
  // Drift: the top-1 class of every image answered, and statistics of the images sent.
  predictions: 'ml_serve_predictions_total',
  inputBrightness: 'ml_serve_input_brightness',
  inputWidth: 'ml_serve_input_width_pixels',
  inputHeight: 'ml_serve_input_height_pixels',
  // Canary: the share of requests each version of a split model gets (labels model, version, role).
  trafficSplit: 'ml_serve_traffic_split_percent',
} as const

/** The roles of the two versions of a canary split (label `role` of SERVE.trafficSplit). */
export const SPLIT_ROLES = ['stable', 'canary'] as const

/** Triton's names (labels model, version), so that existing Triton dashboards work unchanged. */
export const TRITON = {
  success: 'nv_inference_request_success',
  failure: 'nv_inference_request_failure',
  count: 'nv_inference_count',
  execCount: 'nv_inference_exec_count',
  requestUs: 'nv_inference_request_duration_us',
  queueUs: 'nv_inference_queue_duration_us',
  computeUs: 'nv_inference_compute_infer_duration_us',
} as const

/**
 * The event-loop sampling interval the server gives prom-client (eventLoopMonitoringPrecision). Node's
 * monitorEventLoopDelay records each interval between samples, so an idle loop reads about this much:
 * the lag itself is the metric minus this.
 */
export const EVENT_LOOP_SAMPLE_MS = 10

/** prom-client's collectDefaultMetrics names. */
export const PROCESS = {
  cpuSeconds: 'process_cpu_seconds_total',
  residentBytes: 'process_resident_memory_bytes',
  heapUsedBytes: 'nodejs_heap_size_used_bytes',
  eventLoopLagP99: 'nodejs_eventloop_lag_p99_seconds',
  startTime: 'process_start_time_seconds',
} as const

/** Protocols of model requests (the others are health checks, /metrics and unknown paths). */
export const MODEL_PROTOCOLS = /kserve|tfserving|raw|grpc/

/** 5xx answers are the server's failures; 4xx are the client's and do not count against the SLO. */
export const SERVER_ERROR = /5../
export const CLIENT_ERROR = /4../
