// What the AWS clients (S3, Kinesis, SageMaker; AWS SDK for JavaScript v3) share: region, endpoint
// overrides for emulators and S3-compatible stores, retries with capped exponential backoff, and
// credentials from the SDK's default provider chain, resolved once up front so that missing ones
// fail at once with what to set instead of deep inside a retried request.
import {ConfiguredRetryStrategy} from '@smithy/core/retry'
import {UserError} from '../errors.js'

// The SDK warns on every process that Node 20 will lose support in later SDK releases; the versions
// pinned here support it, and the warning would otherwise land in every command's stderr.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

export type AwsService = 's3' | 'kinesis' | 'sagemaker'

export interface AwsSettings {
  region: string
  /** An emulator or S3-compatible endpoint (http://127.0.0.1:5000, MinIO, R2); undefined = AWS itself. */
  endpoint?: string
  /** S3: bucket in the path (http://host/bucket/key) rather than the host name; needed by most S3-compatible stores. */
  forcePathStyle: boolean
  /** Retries after the first attempt. */
  maxRetries: number
  /** Cap of the exponential backoff between retries. */
  maxRetryDelayMs: number
}

const number = (value: string | undefined, fallback: number) => (value !== undefined && value !== '' && Number.isFinite(Number(value)) ? Number(value) : fallback)

/**
 * Settings of one service's client from the environment: ML_<SERVICE>_ENDPOINT (or ML_AWS_ENDPOINT for
 * all three; the SDK's own AWS_ENDPOINT_URL[_<SERVICE>] also work), ML_S3_FORCE_PATH_STYLE (default:
 * on when an endpoint is set), ML_AWS_REGION or AWS_REGION / AWS_DEFAULT_REGION (default us-east-1),
 * ML_AWS_RETRIES, ML_AWS_MAX_RETRY_DELAY_MS.
 */
export function awsSettingsFromEnv(service: AwsService, env: NodeJS.ProcessEnv = process.env): AwsSettings {
  const endpoint = env[`ML_${service.toUpperCase()}_ENDPOINT`] || env.ML_AWS_ENDPOINT || undefined
  const pathStyle = env.ML_S3_FORCE_PATH_STYLE
  return {
    region: env.ML_AWS_REGION || env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
    ...(endpoint ? {endpoint: /^https?:\/\//.test(endpoint) ? endpoint : `http://${endpoint}`} : {}),
    forcePathStyle: pathStyle === undefined || pathStyle === '' ? Boolean(endpoint) : pathStyle === 'true' || pathStyle === '1',
    maxRetries: number(env.ML_AWS_RETRIES, 6),
    maxRetryDelayMs: number(env.ML_AWS_MAX_RETRY_DELAY_MS, 20_000),
  }
}

/** Client options shared by every AWS client here: the SDK's standard retry with a capped, jittered exponential backoff. */
export function clientOptions(s: AwsSettings): {
  region: string
  endpoint?: string
  retryStrategy: ConfiguredRetryStrategy
} {
  return {
    region: s.region,
    ...(s.endpoint ? {endpoint: s.endpoint} : {}),
    retryStrategy: new ConfiguredRetryStrategy(s.maxRetries + 1, (attempt) => Math.min(s.maxRetryDelayMs, 100 * 2 ** attempt) * (0.5 + Math.random() / 2)),
  }
}

export const AWS_AUTH_HELP = [
  'Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE naming a profile in ~/.aws/credentials or ~/.aws/config (`aws configure`, `aws sso login --profile <name>`).',
  'On AWS (SageMaker, EC2, ECS, EKS, Lambda) the attached IAM role is used: check that it allows what the command does.',
]

/** The error for missing or rejected AWS credentials (exit 5), naming what to set. */
export function awsAuthError(service: string, cause: unknown): UserError {
  const detail = cause instanceof Error ? cause.message.split('\n')[0] : String(cause)
  return new UserError(`no usable AWS credentials for ${service}: ${detail}`, {code: 'AWS_AUTH', exit: 'service', cause, suggestions: AWS_AUTH_HELP})
}

const AUTH_ERRORS = new Set([
  'CredentialsProviderError',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
  'UnrecognizedClientException',
  'InvalidClientTokenId',
  'InvalidSignatureException',
  'MissingAuthenticationToken',
])

/** True for an SDK error that means the credentials are missing, expired or rejected. */
export function isAuthError(error: unknown): boolean {
  const name = (error as {name?: string} | undefined)?.name
  return name !== undefined && AUTH_ERRORS.has(name)
}

export const statusOf = (error: unknown): number | undefined => (error as {$metadata?: {httpStatusCode?: number}} | undefined)?.$metadata?.httpStatusCode

/**
 * Resolves the client's credentials (the default provider chain: environment, SSO, profile files,
 * web identity, container and instance roles) once; a failure becomes AWS_AUTH.
 */
export function credentialCheck(service: string, client: {config: {credentials: () => Promise<unknown>}}): () => Promise<void> {
  let pending: Promise<void> | undefined
  return async () => {
    pending ??= (async () => {
      await client.config.credentials()
    })()
    try {
      await pending
    } catch (error) {
      pending = undefined
      throw awsAuthError(service, error)
    }
  }
}
