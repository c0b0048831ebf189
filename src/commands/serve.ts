import {Flags} from '@oclif/core'
import {MlCommand} from '../lib/ui/command.js'
import {isUserError} from '../lib/errors.js'
import type {LoadedConfig} from '../lib/config/load.js'

export default class Serve extends MlCommand {
  static override summary = 'Serve exported models over HTTP (KServe V2 and TF Serving REST).'
  static override description = `Serves every version in the model repository (export.dir, or serve.repository / --repository) for the config's model (or serve.models / --model): the KServe V2 (Triton) and TensorFlow Serving REST protocols, a raw-image :classify for curl, /healthz, /readyz and Prometheus /metrics; with --grpc-port (serve.grpc.port) also KServe V2's GRPCInferenceService and TF Serving's PredictionService over gRPC. Requests are batched dynamically across serve.instances worker threads in each of serve.processes processes; new versions dropped into the repository are loaded, warmed up and swapped in without dropping a request. SIGTERM or Ctrl-C turns readiness false, keeps serving for serve.shutdownDelayMs (--shutdown-delay; default 0) while load balancers catch up, then stops taking connections, finishes queued and in-flight requests and exits 0. Events are JSON lines on stderr; the access log goes to serve.accessLog (default stdout).

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> serve',
    '<%= config.bin %> serve --config ml.yaml --port 9000',
    '<%= config.bin %> serve --repository ./models --model digits --instances 2',
    '<%= config.bin %> serve --model digits@production',
    '<%= config.bin %> serve --repository gs://my-bucket/models --model digits --port 8080',
    '<%= config.bin %> serve --config ml.yaml --host 0.0.0.0 --processes 2 --shutdown-delay 5000',
    '<%= config.bin %> serve --config ml.yaml --grpc-port 8001',
    'curl -s --data-binary @digit.png -H "Content-Type: image/png" localhost:8080/v1/models/digits:classify',
  ]

  static override flags = {
    port: Flags.integer({summary: 'Port (overrides serve.port; 0 picks a free one; else AIP_HTTP_PORT when Vertex AI sets it).', env: 'ML_PORT', min: 0, max: 65_535}),
    'grpc-port': Flags.integer({
      summary: 'Also serve gRPC on this port (overrides serve.grpc.port; 0 picks a free one; off by default).',
      description: 'The KServe V2 GRPCInferenceService (what tritonclient.grpc and the KServe SDK call) and TF Serving\'s PredictionService (Predict, Classify, GetModelMetadata), sharing the batching, metrics, auth and TLS of the HTTP port. Triton listens on 8001, TF Serving on 8500. Example: --grpc-port 8001.',
      env: 'ML_GRPC_PORT',
      min: 0,
      max: 65_535,
    }),
    host: Flags.string({summary: 'Interface to listen on (overrides serve.host).', env: 'ML_HOST'}),
    repository: Flags.string({summary: 'Model repository: a folder or a gs:// prefix (overrides serve.repository and export.dir).', env: 'ML_REPOSITORY'}),
    model: Flags.string({summary: 'Serve this model only (repeatable; overrides serve.models); name@alias serves only the version the alias points at, following it when it moves.', multiple: true}),
    instances: Flags.integer({summary: 'Model instances (worker threads) per process.', min: 1, max: 64}),
    processes: Flags.integer({summary: 'Server processes sharing the port.', min: 1, max: 64}),
    'shutdown-delay': Flags.integer({
      summary: 'Milliseconds to keep serving, not ready, after SIGTERM before draining (overrides serve.shutdownDelayMs).',
      description: `On SIGTERM or Ctrl-C readiness turns false at once (/readyz 503, KServe ready 400) but the port keeps accepting and answering requests this long, so that a load balancer or Kubernetes Service stops sending new connections before the port closes; then the server drains. Default 0 (local use); behind Kubernetes use 5000 or more, and keep terminationGracePeriodSeconds above the delay plus the longest drain. A second signal during the delay ends it and drains at once; a signal during the drain exits at once (130). Example: --shutdown-delay 5000.`,
      env: 'ML_SHUTDOWN_DELAY_MS',
      helpValue: '<ms>',
      min: 0,
      max: 600_000,
    }),
  }

  async run() {
    const {flags} = await this.parse(Serve)
    let loaded: LoadedConfig | undefined
    try {
      loaded = await this.loadConfig(flags.config)
    } catch (error) {
      // A bare repository can be served without any ml.yaml.
      if (!(isUserError(error) && error.code === 'CONFIG_NOT_FOUND' && flags.repository)) throw error
    }
    const {resolveServeOptions} = await import('../lib/serve/options.js')
    // Vertex AI tells its serving containers the port in AIP_HTTP_PORT; --port and ML_PORT still win.
    const aipPort = process.env.AIP_HTTP_PORT === undefined ? undefined : Number(process.env.AIP_HTTP_PORT)
    if (aipPort !== undefined && !(Number.isInteger(aipPort) && aipPort >= 0 && aipPort <= 65_535)) {
      this.error(`AIP_HTTP_PORT=${process.env.AIP_HTTP_PORT} is not a port number`, {exit: 2})
    }
    const options = resolveServeOptions(loaded, {
      port: flags.port ?? aipPort,
      host: flags.host,
      repository: flags.repository,
      models: flags.model,
      instances: flags.instances,
      processes: flags.processes,
      shutdownDelayMs: flags['shutdown-delay'],
      grpcPort: flags['grpc-port'],
    })
    // Under --json stdout must hold only the final summary.
    if (this.jsonEnabled() && options.accessLog === 'stdout') options.accessLog = 'stderr'
    const {runServe} = await import('../lib/serve/run.js')
    const summary = await runServe(options, {
      onListening: (info) => {
        const models = info.models.map((m) => `${m.name} (versions ${m.versions.join(', ')})`).join(', ')
        const grpc = info.grpcPort === undefined ? '' : ` (gRPC on port ${info.grpcPort})`
        this.note(`serving ${models} at ${info.url}${grpc} with ${info.processes} process(es) x ${info.instances} instance(s); try it at ${info.url}/; Ctrl-C to stop`)
      },
    })
    this.note(`stopped on ${summary.signal} after ${summary.requests} request(s)`)
    return summary
  }
}
