// The AWS parts of ml.yaml: the s3 and kinesis sources and train.sagemaker (SageMaker training jobs).
// Kept apart from schema.ts, beside cloud-schema.ts (Google Cloud), so the cloud keys read in one place.
import {z} from 'zod'

const positiveInt = z
  .number({error: 'expected a positive integer'})
  .int({error: 'expected a positive integer'})
  .positive({error: 'expected a positive integer'})

const SplitName = z.enum(['train', 'validation', 'test'])

export const S3_URI = /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/
export const s3Uri = z.string().regex(S3_URI, 'expected an s3://bucket/prefix URI')

export const S3SourceSchema = z
  .strictObject({
    type: z.literal('s3'),
    uri: s3Uri.describe('An s3://bucket/prefix with one sub-prefix per class; the sub-prefix name is the label.'),
    split: SplitName.optional().describe('Put every image of this source into one split. Default: split by content hash.'),
    label: z.string().min(1).optional().describe('A fixed label for every image (then the prefix holds images directly).'),
  })
  .describe('Images in Amazon S3 (or an S3-compatible store, ML_S3_ENDPOINT) under an s3:// prefix, in class sub-prefixes (credentials: the AWS default provider chain).')

export const KinesisSourceSchema = z
  .strictObject({
    type: z.literal('kinesis'),
    stream: z
      .string()
      .regex(/^[a-zA-Z0-9_.-]{1,128}$/, 'expected a Kinesis stream name')
      .describe('The data stream to read; every shard (and, after resharding, its children) is read.'),
    format: z
      .enum(['image', 'fixed'])
      .default('image')
      .describe('image: the record is an envelope {label, image (base64)} as `ml ingest publish --to kinesis` writes; fixed: the record is the image bytes, label = `label`.'),
    label: z.string().min(1).optional().describe('A fixed class name for every record (required by format fixed).'),
    deadLetterStream: z.string().regex(/^[a-zA-Z0-9_.-]{1,128}$/, 'expected a Kinesis stream name').optional().describe('Rejected records are put here, with the reason, before the checkpoint that passes them.'),
    fromStart: z.boolean().default(true).describe('With no checkpoint, start at the oldest record (TRIM_HORIZON); else only new ones (LATEST).'),
    maxRecordsPerCall: positiveInt.max(10_000).default(1000).describe('GetRecords limit per call.'),
    rollIntervalMs: positiveInt.optional().describe('ml ingest --follow commits at least this often (default 10000).'),
  })
  .refine((s) => s.format !== 'fixed' || s.label !== undefined, {message: 'format fixed needs `label`', path: ['label']})
  .describe('Images in an Amazon Kinesis data stream; sequence numbers per shard are checkpointed in the dataset manifest, exactly once.')

export const SageMakerSchema = z
  .strictObject({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'expected a region such as us-east-1').optional().describe('AWS region (default: AWS_REGION).'),
    roleArn: z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/, 'expected an IAM role ARN').describe('IAM role the job runs as (needs S3 access to the dataset and outputPath).'),
    image: z.string().min(1).describe('The ml container image in ECR (configs/docker/Dockerfile), e.g. <account>.dkr.ecr.<region>.amazonaws.com/ml:0.1.0.'),
    instanceType: z.string().regex(/^ml\.[a-z0-9]+\.[a-z0-9]+$/, 'expected a SageMaker instance type such as ml.g5.xlarge').default('ml.m5.xlarge'),
    instanceCount: positiveInt.max(1, {error: 'the trainer is single-node (data-parallel workers on one machine): choose a larger instance for more GPUs'}).default(1),
    volumeSizeGb: positiveInt.max(16_384).default(30).describe('EBS volume per instance (GB).'),
    maxRuntime: positiveInt.default(86_400).describe('Seconds before SageMaker stops the job (StoppingCondition.MaxRuntimeInSeconds).'),
    outputPath: s3Uri.describe('s3:// prefix for job outputs: each job writes under <outputPath>/<job name>/ (config.yaml, runs/, and SageMaker\'s output/model.tar.gz).'),
  })
  .describe('SageMaker training job settings for `ml train --target sagemaker`.')

export type S3SourceConfig = z.output<typeof S3SourceSchema>
export type KinesisSourceConfig = z.output<typeof KinesisSourceSchema>
export type SageMakerConfig = z.output<typeof SageMakerSchema>
