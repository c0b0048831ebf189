// The zod schema of ml.yaml: the single declarative config every command reads.
// Unknown keys are errors (strict objects) so that typos are caught instead of silently ignored.
import {z} from 'zod'

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
  .describe('Images on a local disk (or gs:// prefix) in class sub-folders.')

export const SourceSchema = z.discriminatedUnion('type', [FolderSourceSchema])

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

export const ModelSchema = z
  .strictObject({
    preset: z
      .enum(['mlp', 'cnn-small', 'cnn', 'cnn-tiny'])
      .optional()
      .describe('A built-in architecture. cnn-small is the Keras "simple MNIST convnet".'),
    layers: z.array(LayerSchema).min(1).optional().describe('An explicit layer list (instead of a preset).'),
    dropout: fraction.optional().describe('Dropout rate used by presets that have dropout.'),
  })
  .refine((m) => !(m.preset && m.layers), {message: 'set either preset or layers, not both'})
  .transform((m) => (m.preset || m.layers ? m : {...m, preset: 'cnn-small' as const}))

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
    })
    .prefault({}),
  earlyStopping: z
    .strictObject({
      patience: positiveInt.describe('Stop after this many epochs without validation improvement.'),
      monitor: z.enum(['valLoss', 'valAccuracy']).default('valLoss'),
    })
    .optional(),
  devices: z
    .union([positiveInt.max(64), z.literal('auto')])
    .default(1)
    .describe('Data-parallel workers: a number, or auto (one per GPU, else one per core).'),
})

export const ExportSchema = z.strictObject({
  dir: z.string().min(1).default('.ml/models').describe('Model repository: <dir>/<name>/<version>/.'),
  formats: z.array(z.enum(['tfjs'])).min(1).default(['tfjs']),
})

export const ServeSchema = z.strictObject({
  port: z.number().int().min(0).max(65_535).default(8080),
  host: z.string().default('127.0.0.1'),
})

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
  })
  .describe('ml.yaml: one declarative config for the whole lifecycle of an image classifier.')

export type MlConfig = z.output<typeof ConfigSchema>
export type MlConfigInput = z.input<typeof ConfigSchema>
export type ImageSpec = z.output<typeof ImageSpecSchema>
export type SourceConfig = z.output<typeof SourceSchema>
export type FolderSourceConfig = z.output<typeof FolderSourceSchema>
export type DataConfig = z.output<typeof DataSchema>
export type ModelConfig = z.output<typeof ModelSchema>
export type TrainConfig = z.output<typeof TrainSchema>
export type LayerConfig = z.output<typeof LayerSchema>
export type SplitName = z.output<typeof SplitName>
export const SPLITS: readonly SplitName[] = ['train', 'validation', 'test']
