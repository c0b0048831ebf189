// The zod schema of ml.yaml: the single declarative config every command reads.
// Unknown keys are errors (strict objects) so that typos are caught instead of silently ignored.
import {z} from 'zod'
import {TuneSchema, VertexSchema} from './cloud-schema.js'
import {DeploySchema} from './deploy-schema.js'
import {KinesisSourceSchema, S3SourceSchema, SageMakerSchema} from './aws-schema.js'

// Messages say what was expected; the loader appends what it got (`train.batchSize: expected a
// positive integer, got "abc"`).
const positiveInt = z
  .number({error: 'expected a positive integer'})
  .int({error: 'expected a positive integer'})
  .positive({error: 'expected a positive integer'})
const fraction = z
  .number({error: 'expected a number between 0 and 1'})
  .min(0, {error: 'expected a number between 0 and 1'})
  .max(1, {error: 'expected a number between 0 and 1'})

export const ImageSpecSchema = z
  .strictObject({
    width: positiveInt.max(4096).default(28).describe('Width in pixels images are resized to.'),
    height: positiveInt.max(4096).default(28).describe('Height in pixels images are resized to.'),
    channels: z
      .union([z.literal(1), z.literal(3)])
      .default(1)
      .describe('1 = greyscale, 3 = RGB. Images are converted to this many channels.'),
    fit: z
      .enum(['fill', 'contain', 'cover'])
      .default('fill')
      .describe('How an image of another aspect ratio is fitted (sharp resize fit).'),
  })
  .describe('Input image geometry: every image is converted to this before it is stored.')

const SplitName = z.enum(['train', 'validation', 'test'])

export const FolderSourceSchema = z
  .strictObject({
    type: z.literal('folder'),
    path: z.string().min(1).describe('A folder with one sub-folder per class; the sub-folder name is the label.'),
    split: SplitName.optional().describe(
      'Put every image of this source into one split (e.g. an official test set). Default: split by content hash.',
    ),
    label: z.string().min(1).optional().describe('A fixed label for every image (then path holds images directly).'),
  })
  .describe('Images on a local disk in class sub-folders (for a gs:// prefix use type gcs).')

// Mutual TLS needs both halves; either alone is a mistake, reported at the key that is missing.
const KafkaSslSchema = z
  .strictObject({
    caFile: z.string().min(1).optional().describe("PEM file of the CA(s) that signed the brokers' certificates (default: the system CAs)."),
    certFile: z.string().min(1).optional().describe('PEM client certificate, for brokers that require one (mutual TLS); needs keyFile.'),
    keyFile: z.string().min(1).optional().describe('PEM private key (unencrypted) of certFile.'),
    rejectUnauthorized: z.boolean().default(true).describe("Verify the brokers' certificates and host names (false: accept any, for testing only)."),
  })
  .refine((s) => s.certFile === undefined || s.keyFile !== undefined, {message: 'certFile needs keyFile', path: ['keyFile']})
  .refine((s) => s.keyFile === undefined || s.certFile !== undefined, {message: 'keyFile needs certFile', path: ['certFile']})

export const KafkaSourceSchema = z
  .strictObject({
    type: z.literal('kafka'),
    brokers: z.array(z.string().min(1)).min(1).describe('Bootstrap brokers, host:port.'),
    topics: z.array(z.string().min(1)).min(1).describe('Topics to consume; they must exist.'),
    groupId: z.string().min(1).describe('Consumer group; its committed offsets are where the next ingest starts.'),
    clientId: z.string().min(1).optional().describe('Kafka client id (default ml-ingest).'),
    ssl: z
      .union([z.boolean(), KafkaSslSchema], {error: 'expected true or {caFile, certFile, keyFile, rejectUnauthorized}'})
      .optional()
      .describe('Connect with TLS: true (system CAs) or {caFile, certFile, keyFile, rejectUnauthorized}; files are read at connect time, relative to the config file.'),
    sasl: z
      .strictObject({
        mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']),
        username: z.string().min(1),
        passwordEnv: z.string().min(1).describe('Name of the environment variable holding the password.'),
      })
      .optional(),
    format: z
      .enum(['image', 'json', 'fixed'])
      .default('image')
      .describe('image: value = image bytes, label in a header or the key; json: value = {label, uri} of a local file; fixed: value = image bytes, label = `label`.'),
    labelHeader: z.string().min(1).default('label').describe('Header holding the class name (format image).'),
    labelFrom: z.enum(['header', 'key']).default('header').describe('Where format image finds the class name.'),
    label: z.string().min(1).optional().describe('A fixed class name for every message (required by format fixed).'),
    deadLetterTopic: z.string().min(1).optional().describe('Rejected messages are produced here, with headers giving the reason.'),
    maxInFlightBytes: positiveInt.default(64 * 1024 * 1024).describe('Consumption pauses while this many message bytes wait to be stored.'),
    fromBeginning: z.boolean().default(true).describe('With no committed offset, start at the oldest message (else only new ones).'),
    rollIntervalMs: positiveInt.optional().describe('ml ingest --follow commits at least this often (default 10000).'),
    sessionTimeoutMs: positiveInt.min(1000).default(30_000).describe('Consumer group session timeout.'),
  })
  .refine((s) => s.format !== 'fixed' || s.label !== undefined, {message: 'format fixed needs `label`', path: ['label']})
  .describe('Images (or pointers to them) in Kafka topics, consumed by a consumer group; offsets are committed after the data is.')

export const GcsSourceSchema = z
  .strictObject({
    type: z.literal('gcs'),
    uri: z
      .string()
      .regex(/^gs:\/\/[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](\/.*)?$/, 'expected a gs://bucket/prefix URI')
      .describe('A gs://bucket/prefix with one sub-prefix per class; the sub-prefix name is the label.'),
    split: SplitName.optional().describe('Put every image of this source into one split. Default: split by content hash.'),
    label: z.string().min(1).optional().describe('A fixed label for every image (then the prefix holds images directly).'),
  })
  .describe('Images in Cloud Storage under a gs:// prefix, in class sub-prefixes (credentials: Application Default Credentials).')

export const SourceSchema = z.discriminatedUnion('type', [FolderSourceSchema, KafkaSourceSchema, GcsSourceSchema, S3SourceSchema, KinesisSourceSchema])

export const DataSchema = z.strictObject({
  sources: z.array(SourceSchema).min(1).describe('Where images come from.'),
  image: ImageSpecSchema.prefault({}),
  split: z
    .strictObject({
      validation: fraction.default(0.1).describe('Fraction of hash-split images put in the validation split.'),
      test: fraction.default(0.1).describe('Fraction of hash-split images put in the test split.'),
      seed: z.number().int().nonnegative().default(0).describe('Salt of the content-hash split.'),
    })
    .prefault({})
    .refine((s) => s.validation > 1 || s.test > 1 || s.validation + s.test < 1, {
      message: 'validation + test must be below 1',
    }),
  store: z.string().min(1).default('.ml/dataset').describe('Dataset store directory (shards + manifest).'),
  shardSize: positiveInt.default(4096).describe('Examples per TFRecord shard.'),
  maxPixels: positiveInt
    .default(40_000_000)
    .describe('Images with more pixels than this are rejected (decompression-bomb guard).'),
  maxFileBytes: positiveInt.default(50 * 1024 * 1024).describe('Files larger than this are rejected.'),
  concurrency: positiveInt.max(256).optional().describe('Parallel image decodes (default: 2 x cores).'),
  compression: z
    .enum(['auto', 'none', 'fast', 'best'])
    .default('auto')
    .describe(
      'PNG compression of stored images (all lossless): none is fastest to ingest and as large as the raw pixels, best is ' +
        'smallest; auto = best up to 64x64, none above, where compressing costs a third of the decode.',
    ),
})

export const LayerSchema = z
  .object({
    type: z
      .string()
      .min(1)
      .describe('A tf.layers class name in camelCase, e.g. conv2d, maxPooling2d, dense, dropout, flatten.'),
  })
  .catchall(z.unknown())
  .describe('One layer: `type` plus that layer\'s tf.layers arguments.')

export const BaseSchema = z
  .strictObject({
    source: z
      .string()
      .min(1)
      .describe('A TensorFlow.js model: a folder or model.json path, or a gs:// or https:// URL of model.json. A layers model can be fine-tuned; a graph model is used frozen.'),
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, 'expected 64 lower-case hex digits')
      .optional()
      .describe('Pin: sha256 of model.json followed by its weight files in manifest order (a mismatch is an error that prints the actual value).'),
    output: z.string().min(1).default('auto').describe('Layer (or graph node) to cut at; auto = the last pooled feature layer.'),
    trainable: z
      .union([z.boolean(), z.number().int().nonnegative()])
      .default(false)
      .describe('false = frozen, true = every layer, N = the top N layers that have weights.'),
    inputRange: z
      .union([z.tuple([z.literal(0), z.literal(1)]), z.tuple([z.literal(-1), z.literal(1)])])
      .default([0, 1])
      .describe('The pixel range the base was trained on; recorded in the model, so predict, export and serve apply it.'),
    inputSize: z
      .tuple([positiveInt, positiveInt])
      .optional()
      .describe('[height, width] the base expects, for bases whose model.json does not fix it; checked against data.image.'),
  })
  .describe('A pretrained network the classifier starts from (transfer learning).')

export const HeadSchema = z
  .strictObject({
    hidden: z.array(positiveInt).default([]).describe('Units of hidden dense (relu) layers between the base and the classifier.'),
    dropout: fraction.default(0.2).describe('Dropout before each dense layer of the head.'),
  })
  .describe('The layers on top of model.base, ending in the softmax classifier.')

export const ModelSchema = z
  .strictObject({
    base: BaseSchema.optional(),
    head: HeadSchema.optional(),
    preset: z
      .enum(['mlp', 'cnn-small', 'cnn', 'cnn-tiny', 'cnn-photo'])
      .optional()
      .describe('A built-in architecture. cnn-small is the Keras "simple MNIST convnet"; cnn-photo (strided stem, global pooling) suits photo-size inputs trained from scratch. Default: chosen by data.image (cnn-photo from 96 px, else cnn-small).'),
    layers: z.array(LayerSchema).min(1).optional().describe('An explicit layer list (instead of a preset).'),
    dropout: fraction.optional().describe('Dropout rate used by presets that have dropout.'),
  })
  .refine((m) => !(m.preset && m.layers), {message: 'set either preset or layers, not both'})
  .refine((m) => !(m.base && (m.preset || m.layers)), {message: 'set either base (with head) or preset/layers, not both'})
  .refine((m) => !(m.head && !m.base), {message: 'head goes with base'})

export const TrainSchema = z.strictObject({
  epochs: positiveInt.max(100_000).default(10),
  batchSize: positiveInt.max(65_536).default(128),
  optimizer: z.enum(['adam', 'sgd', 'momentum', 'rmsprop', 'adagrad']).default('adam'),
  learningRate: z.number().positive().max(10).default(0.001),
  backend: z
    .enum(['auto', 'tensorflow', 'wasm', 'cpu'])
    .default('auto')
    .describe('auto: tfjs-node-gpu, then tfjs-node when installed, else wasm, else cpu.'),
  seed: z.number().int().nonnegative().default(42).describe('Seed of weight init, shuffling and dropout.'),
  runs: z.string().min(1).default('.ml/runs').describe('Where run directories are created.'),
  shuffleBuffer: positiveInt.optional().describe('Examples in the shuffle buffer (default: whole split).'),
  augment: z
    .strictObject({
      shift: z.number().int().min(0).max(64).default(0).describe('Random translation up to this many pixels.'),
      flipHorizontal: z.boolean().default(false),
      crop: fraction
        .default(1)
        .describe('Random resized crop: each image is cut to a random area between this share and all of it (aspect 3:4 to 4:3), then resized back; 1 = off. 0.5 suits photos.'),
      brightness: fraction.default(0).describe('Random brightness change of up to this much (pixel values in [0,1]); 0 = off.'),
      contrast: fraction.default(0).describe('Random contrast factor between 1 - this and 1 + this, around the image mean; 0 = off.'),
    })
    .prefault({}),
  schedule: z
    .strictObject({
      type: z
        .enum(['constant', 'step', 'cosine', 'exponential'])
        .default('constant')
        .describe('constant; step: x gamma every stepEpochs; exponential: x gamma per epoch; cosine: down to minLearningRate at the last epoch.'),
      warmupEpochs: z.number().min(0).max(1000).default(0).describe('Linear warm-up from ~0 to learningRate over this many epochs (fractions allowed), before the schedule.'),
      stepEpochs: z.number().positive().default(10).describe('step: epochs between decays.'),
      gamma: z.number().positive().max(1).default(0.1).describe('step and exponential: the decay factor.'),
      minLearningRate: z.number().min(0).default(0).describe('cosine: the rate at the end of training.'),
    })
    .optional()
    .describe('Learning-rate schedule, applied per step (resumes and data-parallel runs use the same rates).'),
  classWeights: z
    .union([z.literal('auto'), z.record(z.string(), z.number().positive()), z.array(z.number().positive())])
    .optional()
    .describe('Loss weight per class for imbalanced data: auto (n / (classes x count) from the train split), {<class>: weight}, or a list by class index.'),
  fineTune: z
    .strictObject({
      epochs: positiveInt.max(100_000).describe('Epochs of the second phase, after train.epochs with the base frozen.'),
      learningRate: z.number().positive().max(10).default(0.0001).describe('Learning rate of the second phase (lower than train.learningRate).'),
      unfreeze: z
        .union([z.literal(true), positiveInt])
        .describe('Base layers to unfreeze in the second phase: true = all, N = the top N layers that have weights.'),
    })
    .optional()
    .describe('Two-phase fine-tuning of model.base: head first (base frozen), then the top of the base at a lower rate.'),
  earlyStopping: z
    .strictObject({
      patience: positiveInt.describe('Stop after this many epochs without validation improvement.'),
      monitor: z.enum(['valLoss', 'valAccuracy']).default('valLoss'),
      restoreBest: z
        .boolean()
        .default(false)
        .describe("Keep the best epoch's weights (by monitor) as the run's model instead of the last epoch's; run.json records which epoch was kept."),
    })
    .optional(),
  microBatch: z
    .union([positiveInt, z.literal('auto')])
    .default('auto')
    .describe(
      'Examples per forward/backward pass; a larger train.batchSize is split and its gradients summed (the same update). ' +
        'auto: as many as fit a 1 GiB activation budget, estimated from the model.',
    ),
  devices: z
    .union([positiveInt.max(64), z.literal('auto')])
    .default(1)
    .describe('Data-parallel workers: a number, or auto (one per GPU, else one per core).'),
  target: z
    .enum(['local', 'vertex', 'sagemaker'])
    .default('local')
    .describe('Where `ml train` runs: on this machine, as a Vertex AI CustomJob configured by train.vertex, or as a SageMaker training job configured by train.sagemaker. Flag --target.'),
  vertex: VertexSchema.optional(),
  sagemaker: SageMakerSchema.optional(),
})

export const ExportSchema = z.strictObject({
  dir: z.string().min(1).default('.ml/models').describe('Model repository: <dir>/<name>/<version>/.'),
  formats: z
    .array(z.enum(['tfjs', 'onnx', 'triton']))
    .min(1)
    .default(['tfjs', 'onnx'])
    .describe('Formats `ml export` writes (ONNX is what serve, predict and evaluate run fastest): tfjs (model.json + weights.bin), onnx (model.onnx), triton (model.onnx + config.pbtxt + labels.txt).'),
  quantize: z
    .enum(['none', 'float16', 'uint8'])
    .default('none')
    .describe('Weight quantization of the exported kernels (tfjs and ONNX); the export reports the accuracy change.'),
  triton: z
    .strictObject({
      maxBatchSize: positiveInt.max(1_048_576).default(64).describe('config.pbtxt max_batch_size.'),
      preferredBatchSize: z.array(positiveInt).optional().describe('dynamic_batching preferred_batch_size (default: [maxBatchSize]).'),
      maxQueueDelayMicroseconds: z.number().int().nonnegative().default(100).describe('dynamic_batching max_queue_delay_microseconds.'),
      instances: positiveInt.max(1024).default(1).describe('instance_group count.'),
      kind: z.enum(['cpu', 'gpu']).default('cpu').describe('instance_group kind: KIND_CPU or KIND_GPU.'),
    })
    .prefault({})
    .refine((t) => (t.preferredBatchSize ?? []).every((b) => b <= t.maxBatchSize), {message: 'preferredBatchSize entries must not exceed maxBatchSize'}),
})

// A version named by number or by label/alias (as in TF Serving URLs and `ml models alias`).
const versionRef = z.union([positiveInt, z.string().regex(/^[a-zA-Z][a-zA-Z0-9_-]{0,62}$/, {error: 'expected a version number or a label/alias name'})])

export const ServeSplitSchema = z
  .strictObject({
    stable: versionRef.default('production').describe('The version most requests go to: a number, a label or an alias (default: alias production).'),
    canary: versionRef.default('canary').describe('The version under trial: a number, a label or an alias (default: alias canary).'),
    percent: z.number().min(0).max(100).describe("Share of requests without a version sent to the canary, as KServe's canaryTrafficPercent, e.g. 10."),
    stickyHeader: z
      .string()
      .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, {error: 'expected an HTTP header name'})
      .optional()
      .describe('A request header (e.g. x-user-id) whose value keeps each caller on one version; requests without it are split by count.'),
  })
  .describe('Canary traffic split between two versions of the model (requests naming a version or label are not split). Aliases are followed when they move.')

const ServeModelSchema = z.union([
  z.string().min(1),
  z.strictObject({
    name: z.string().min(1).describe('Model folder name in the repository.'),
    labels: z
      .record(z.string().regex(/^[a-zA-Z][a-zA-Z0-9_-]*$/), positiveInt)
      .optional()
      .describe('Version labels for TF Serving URLs (/labels/<label>), e.g. {stable: 3, canary: 4}.'),
    split: ServeSplitSchema.optional(),
  }),
])

export const ServeSchema = z.strictObject({
  port: z.number().int().min(0).max(65_535).default(8080).describe('TCP port (0 = any free port). Flag --port, env ML_PORT.'),
  host: z.string().default('127.0.0.1').describe('Interface to listen on (0.0.0.0 for every interface).'),
  repository: z.string().min(1).optional().describe('Model repository <repository>/<model>/<version>/ (default export.dir).'),
  models: z
    .array(ServeModelSchema)
    .min(1)
    .optional()
    .describe('Models to serve: names (name@alias: only the version that alias points at), or {name, labels, split}. Default: every model folder in the repository.'),
  versionPolicy: z
    .union([z.literal('all'), z.strictObject({latest: positiveInt})])
    .default('all')
    .describe('Versions kept loaded: all, or {latest: N}. Requests without a version get the newest ready one.'),
  runtime: z
    .enum(['auto', 'tfjs', 'onnx'])
    .default('auto')
    .describe('auto: model.onnx with onnxruntime-node when both are present (its CUDA provider when installed), else model.json with TensorFlow.js.'),
  instances: z
    .union([positiveInt.max(64), z.literal('auto')])
    .default('auto')
    .describe('Model instances (worker threads) per process; auto = (cores - one per process for HTTP) / processes / threads.'),
  threads: z
    .union([positiveInt.max(256), z.literal('auto')])
    .default('auto')
    .describe('ONNX Runtime intra-op threads per instance; auto = 1 with auto instances, else the cores left per instance.'),
  processes: positiveInt.max(64).default(1).describe('Server processes sharing the port (node:cluster); a crashed one is replaced.'),
  maxBatchSize: positiveInt.max(4096).default(32).describe('Most images in one batch, and in one request; 1 turns batching off.'),
  preferredBatchSize: positiveInt
    .max(4096)
    .optional()
    .describe('While another instance is busy, a free one waits (up to maxQueueDelayMs) for this many queued images (default maxBatchSize).'),
  maxQueueDelayMs: z
    .number()
    .min(0)
    .max(10_000)
    .default(2)
    .describe('Longest a request waits for a batch to fill; never waited when every instance is idle.'),
  maxQueueSize: positiveInt.default(512).describe('Queued images per model version beyond which requests get 503 with Retry-After.'),
  requestTimeoutMs: positiveInt.default(10_000).describe('A request not answered in this time gets 504; its queued work is dropped.'),
  maxBodyBytes: positiveInt.default(8 * 1024 * 1024).describe('Larger request bodies get 413.'),
  maxJsonDepth: positiveInt.max(1000).default(32).describe('Deepest nesting of arrays and objects in a JSON request body; deeper gets 400.'),
  maxInFlightBytes: positiveInt
    .default(64 * 1024 * 1024)
    .describe('Request bodies read or decoded at once, in bytes; a request that would go over gets 503 with Retry-After before its body is read.'),
  clientTimeoutMs: positiveInt
    .default(30_000)
    .describe('A client that has not sent its whole request in this time is disconnected (408); headers get at most 10 s.'),
  pollIntervalMs: z
    .number()
    .int()
    .min(0)
    .default(2000)
    .describe('How often the repository is scanned for new, changed or removed versions (0 = never).'),
  shutdownDelayMs: z
    .number()
    .int()
    .min(0)
    .max(600_000)
    .default(0)
    .describe(
      'On SIGTERM, readiness turns false at once but requests are still served this long before the drain, while load balancers stop sending (5000+ behind a Kubernetes Service). Flag --shutdown-delay, env ML_SHUTDOWN_DELAY_MS.',
    ),
  accessLog: z
    .string()
    .min(1)
    .default('stdout')
    .describe('JSON access log, one line per request: stdout, stderr, off, or a file path (appended).'),
  auth: z
    .strictObject({
      tokenEnv: z.string().min(1).describe('Environment variable holding the bearer token.'),
    })
    .optional()
    .describe('Bearer-token auth for every endpoint except health checks.'),
  tls: z
    .strictObject({
      cert: z.string().min(1).describe('PEM certificate (chain) file.'),
      key: z.string().min(1).describe('PEM private key file.'),
    })
    .optional()
    .describe('Serve HTTPS with this certificate and key.'),
  grpc: z
    .strictObject({
      port: z.number().int().min(0).max(65_535).describe('gRPC port (0 = any free port); 8001 is Triton\'s, 8500 TF Serving\'s. Flag --grpc-port, env ML_GRPC_PORT.'),
    })
    .optional()
    .describe('Also serve gRPC on a second port (off by default): the KServe V2 GRPCInferenceService and TF Serving\'s PredictionService, with the same batching, metrics, auth and TLS as HTTP.'),
})

const DURATION_UNITS = {ms: 0.001, s: 1, m: 60, h: 3600} as const
// Seconds, written as a number or as 500ms / 60s / 5m / 1h.
const duration = z
  .union([
    z.number({error: 'expected a duration'}).positive({error: 'expected a positive duration'}),
    z.string().regex(/^\d+(\.\d+)?(ms|s|m|h)$/, {error: 'expected a duration like 500ms, 60s, 5m or 1h'}),
  ])
  .transform((v) => (typeof v === 'number' ? v : Number(/^[\d.]+/.exec(v)![0]) * DURATION_UNITS[/[a-z]+$/.exec(v)![0] as keyof typeof DURATION_UNITS]))

export const MonitorSchema = z
  .strictObject({
    targets: z
      .array(z.string().min(1))
      .default([])
      .describe('`ml serve` URLs to watch, e.g. http://127.0.0.1:8080 (/metrics is appended to a bare host). Flag --url.'),
    ingest: z.string().min(1).optional().describe('Metrics URL of a Kafka ingest in follow mode (flag --ingest).'),
    refreshMs: positiveInt.min(100).max(3_600_000).default(2000).describe('Dashboard refresh interval; --once takes its two scrapes this far apart.'),
    history: duration.default(300).describe('Span of the dashboard sparklines, e.g. 5m.'),
    tokenEnv: z.string().min(1).optional().describe('Environment variable holding the bearer token for /metrics (default: serve.auth.tokenEnv).'),
    slo: z
      .strictObject({
        p99Ms: z.number().positive().optional().describe('p99 request latency objective per model, in milliseconds.'),
        errorRate: fraction.optional().describe('Highest share of 5xx answers per model, e.g. 0.01.'),
        window: duration.default(60).describe('What `ml monitor --check` measures over: two scrapes this far apart (e.g. 60s). Flag --window.'),
        drift: z
          .number()
          .positive()
          .optional()
          .describe('Highest population stability index of predicted classes against the training class priors (0.1: slight shift, 0.25: major).'),
        driftMinSamples: positiveInt.default(100).describe('Predictions needed in the window before drift is judged.'),
      })
      .prefault({})
      .describe('Objectives checked by `ml monitor --check` (exit 6 when one is violated) and shown in red on the dashboard.'),
    canary: z
      .strictObject({
        minRequests: positiveInt.default(100).describe('Requests the canary and the stable version each need in the window before a verdict (else: wait, exit 7).'),
        errorRateMargin: fraction.default(0.01).describe("Rollback when the canary's 5xx rate exceeds the stable version's by more than this (0.01: one percentage point)."),
        p99Ratio: z.number().min(1).default(1.2).describe("Rollback when the canary's p99 latency exceeds the stable p99 times this, and by more than p99MarginMs."),
        p99MarginMs: z.number().min(0).default(5).describe('Smallest p99 difference, in ms, that counts against the canary.'),
      })
      .prefault({})
      .describe('`ml monitor --check` on a canary split (serve.models[].split): promote (exit 0), rollback (exit 6) or wait (exit 7).'),
  })
  .describe('`ml monitor`: live dashboard, snapshots and SLO checks of `ml serve` targets.')

export const ConfigSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/, 'letters, digits, ".", "_" and "-", starting with a letter or digit')
      .default('model')
      .describe('Model name, used for run ids and the model repository.'),
    data: DataSchema,
    model: ModelSchema.prefault({}),
    train: TrainSchema.prefault({}),
    export: ExportSchema.prefault({}),
    serve: ServeSchema.prefault({}),
    monitor: MonitorSchema.prefault({}),
    tune: TuneSchema.optional(),
    deploy: DeploySchema.prefault({}),
  })
  // No model given: the preset that suits the image size (a 28x28 digit net would not fit photos).
  .transform((c) => (c.model.preset || c.model.layers || c.model.base ? c : {...c, model: {...c.model, preset: defaultPreset(c.data.image)}}))
  .describe('ml.yaml: one declarative config for the whole lifecycle of an image classifier.')

/** Smallest image side from which the default preset is cnn-photo (strided stem, global pooling). */
export const PHOTO_PRESET_MIN_SIDE = 96

/** The preset used when model gives none: cnn-photo for photo-size images, cnn-small for small ones. */
export function defaultPreset(image: {width: number; height: number}): 'cnn-photo' | 'cnn-small' {
  return Math.min(image.width, image.height) >= PHOTO_PRESET_MIN_SIDE ? 'cnn-photo' : 'cnn-small'
}

export type MlConfig = z.output<typeof ConfigSchema>
export type MlConfigInput = z.input<typeof ConfigSchema>
export type ImageSpec = z.output<typeof ImageSpecSchema>
export type SourceConfig = z.output<typeof SourceSchema>
export type FolderSourceConfig = z.output<typeof FolderSourceSchema>
export type GcsSourceConfig = z.output<typeof GcsSourceSchema>
export type KafkaSourceConfig = z.output<typeof KafkaSourceSchema>
export type {KinesisSourceConfig, S3SourceConfig, SageMakerConfig} from './aws-schema.js'
export type DataConfig = z.output<typeof DataSchema>
export type ModelConfig = z.output<typeof ModelSchema>
export type TrainConfig = z.output<typeof TrainSchema>
export type LayerConfig = z.output<typeof LayerSchema>
export type BaseConfig = z.output<typeof BaseSchema>
export type HeadConfig = z.output<typeof HeadSchema>
export type SplitName = z.output<typeof SplitName>
export type MonitorConfig = z.output<typeof MonitorSchema>
export const SPLITS: readonly SplitName[] = ['train', 'validation', 'test']
