// The Google Cloud parts of ml.yaml: train.vertex (Vertex AI CustomJobs) and tune (hyperparameter
// tuning jobs). Kept apart from schema.ts so that the cloud keys can be read in one place.
import {z} from 'zod'

const positiveInt = z
  .number({error: 'expected a positive integer'})
  .int({error: 'expected a positive integer'})
  .positive({error: 'expected a positive integer'})

const gsUri = z.string().regex(/^gs:\/\/[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](\/.*)?$/, 'expected a gs://bucket/prefix URI')

/** 90s, 30m, 2h or 1d: a duration for Vertex AI's scheduling.timeout. */
export const DURATION = /^(\d+)(s|m|h|d)$/

export function durationSeconds(text: string): number {
  const [, n, unit] = DURATION.exec(text)!
  return Number(n) * {s: 1, m: 60, h: 3600, d: 86_400}[unit as 's' | 'm' | 'h' | 'd']
}

export const VertexSchema = z
  .strictObject({
    project: z.string().regex(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/, 'expected a Google Cloud project id').describe('Google Cloud project id.'),
    region: z.string().regex(/^[a-z]+-[a-z]+\d+$/, 'expected a region such as us-central1').describe('Vertex AI region, e.g. us-central1 (the API endpoint is <region>-aiplatform.googleapis.com).'),
    machineType: z.string().min(1).default('n1-standard-8').describe('Compute Engine machine type of the worker, e.g. n1-standard-8, g2-standard-12.'),
    acceleratorType: z
      .string()
      .regex(/^[A-Z][A-Z0-9_]+$/, 'expected an accelerator type such as NVIDIA_TESLA_T4')
      .optional()
      .describe('e.g. NVIDIA_TESLA_T4, NVIDIA_L4, NVIDIA_TESLA_A100; omit for CPU only.'),
    acceleratorCount: positiveInt.max(16).optional().describe('GPUs per worker (default 1 with acceleratorType); the trainer runs one data-parallel worker per GPU.'),
    replicaCount: positiveInt
      .max(1, {error: 'the trainer is single-node (data-parallel workers on one machine): use acceleratorCount for more GPUs'})
      .default(1)
      .describe('Machines in the worker pool; 1 (the trainer scales across the GPUs of one machine).'),
    image: z.string().min(1).describe('The ml container image (configs/docker/Dockerfile), e.g. us-docker.pkg.dev/<project>/ml/ml:0.1.0.'),
    serviceAccount: z.string().email().optional().describe('Service account the job runs as (default: the Vertex AI custom code service agent).'),
    timeout: z.string().regex(DURATION, 'expected a duration such as 90s, 30m, 2h or 1d').optional().describe('The job is stopped after this long (scheduling.timeout).'),
    baseOutputDir: gsUri.describe('gs:// prefix for job outputs: each job writes under <baseOutputDir>/<job display name>/ (config.yaml, runs/, model/).'),
  })
  .describe('Vertex AI CustomJob settings for `ml train --target vertex` and `ml tune`.')

const parameterName = z
  .string()
  .regex(/^(model|train)\.[a-zA-Z][a-zA-Z0-9.]*$/, 'expected a train.* or model.* config key, e.g. train.learningRate')
  .describe('The config key the trial sets, e.g. train.learningRate.')
const scale = z.enum(['linear', 'log', 'reverseLog']).optional().describe('How values are searched (default linear).')

export const TuneParameterSchema = z.discriminatedUnion('type', [
  z.strictObject({name: parameterName, type: z.literal('double'), min: z.number(), max: z.number(), scale}).refine((p) => p.min < p.max, {message: 'min must be below max'}),
  z
    .strictObject({name: parameterName, type: z.literal('integer'), min: z.number().int(), max: z.number().int(), scale})
    .refine((p) => p.min < p.max, {message: 'min must be below max'}),
  z.strictObject({name: parameterName, type: z.literal('discrete'), values: z.array(z.number()).min(1)}),
  z.strictObject({name: parameterName, type: z.literal('categorical'), values: z.array(z.string().min(1)).min(1)}),
])

export const TuneSchema = z
  .strictObject({
    metric: z
      .enum(['valAccuracy', 'valLoss', 'accuracy', 'loss'])
      .default('valAccuracy')
      .describe('The epoch metric each trial reports (hypertune format) and the study optimises.'),
    goal: z.enum(['maximize', 'minimize']).optional().describe('Default: maximize for accuracies, minimize for losses.'),
    maxTrials: positiveInt.max(1000).default(10),
    parallelTrials: positiveInt.max(100).default(2),
    maxFailedTrials: z.number().int().min(0).optional().describe('The job fails after this many failed trials (Vertex default: a few).'),
    algorithm: z
      .enum(['default', 'grid', 'random', 'halving'])
      .default('default')
      .describe('default = Bayesian search on Vertex AI (Vizier) and SageMaker, successive halving locally; halving = successive halving locally, Hyperband on SageMaker (not on Vertex AI); grid on SageMaker takes values lists only.'),
    target: z
      .enum(['vertex', 'sagemaker', 'local'])
      .optional()
      .describe('Where trials run: Vertex AI, SageMaker, or `ml train` processes on this machine (flag --target). Default: sagemaker when train.target is sagemaker, else vertex.'),
    eta: z.number().int().min(2).max(10).default(3).describe('Successive halving: keep the best 1/eta of the trials at each rung, which train eta times longer.'),
    parameters: z.array(TuneParameterSchema).min(1).describe('Config keys to search, each with its range or values.'),
  })
  .refine((t) => new Set(t.parameters.map((p) => p.name)).size === t.parameters.length, {message: 'each parameter name may appear once', path: ['parameters']})
  .describe('Hyperparameter tuning (`ml tune`): trials run like `ml train --target vertex|sagemaker` (train.vertex or train.sagemaker), or on this machine.')

export type VertexConfig = z.output<typeof VertexSchema>
export type TuneConfig = z.output<typeof TuneSchema>
export type TuneParameter = z.output<typeof TuneParameterSchema>
