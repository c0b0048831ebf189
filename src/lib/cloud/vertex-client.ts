// Vertex AI API clients (@google-cloud/aiplatform) for training, tuning and the model registry: the
// regional endpoint, Application Default Credentials, stand-in endpoints for tests, and error meanings.
import type {v1} from '@google-cloud/aiplatform'
import {UserError} from '../errors.js'
import {importOptional} from '../optional.js'

export type JobServiceClient = InstanceType<typeof v1.JobServiceClient>
export type ModelServiceClient = InstanceType<typeof v1.ModelServiceClient>
export type EndpointServiceClient = InstanceType<typeof v1.EndpointServiceClient>

export interface VertexLocation {
  project: string
  region: string
}

/** `projects/<project>/locations/<region>`, the parent of jobs and models. */
export const parentOf = (location: VertexLocation) => `projects/${location.project}/locations/${location.region}`

/** The project and region named in a resource name (projects/P/locations/L/...), if it is one. */
export function locationOfName(name: string): VertexLocation | undefined {
  const match = /^projects\/([^/]+)\/locations\/([^/]+)\//.exec(name)
  return match ? {project: match[1]!, region: match[2]!} : undefined
}

/**
 * An auth client that sends no credentials, for a stand-in endpoint (ML_VERTEX_ENDPOINT) only; the
 * shape is what google-gax's REST transport calls (getRequestHeaders, fetch, universeDomain).
 */
const anonymousAuth = {
  universeDomain: 'googleapis.com',
  getRequestHeaders: async () => new Headers(),
  fetch: (url: string | URL, init?: RequestInit) => fetch(url, init),
}

/**
 * Client options: the regional endpoint (<region>-aiplatform.googleapis.com, which Vertex AI
 * requires) with Application Default Credentials; or, when ML_VERTEX_ENDPOINT is set (an
 * http://host:port stand-in), the REST transport there without credentials.
 */
export function clientOptions(region: string, env: NodeJS.ProcessEnv = process.env): Record<string, string | number | boolean | object> {
  const endpoint = env.ML_VERTEX_ENDPOINT
  if (endpoint) {
    const url = new URL(endpoint)
    return {
      apiEndpoint: url.hostname,
      port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
      protocol: url.protocol.replace(':', ''),
      fallback: true,
      authClient: anonymousAuth,
    }
  }
  return {apiEndpoint: `${region}-aiplatform.googleapis.com`}
}

const AUTH_HELP = [
  'Run `gcloud auth application-default login` (a workstation), or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file.',
  'The account needs the Vertex AI User role (roles/aiplatform.user) in the project, and the Vertex AI API must be enabled.',
]

export function vertexAuthError(cause: unknown): UserError {
  const detail = cause instanceof Error ? cause.message.split('\n')[0] : String(cause)
  return new UserError(`no usable Google Cloud credentials for Vertex AI: ${detail}`, {code: 'VERTEX_AUTH', exit: 'service', cause, suggestions: AUTH_HELP})
}

interface WithAuth {
  auth?: {getClient(): Promise<unknown>}
}

/** Resolves credentials before the first call, so that missing ones fail at once with what to set. */
async function checkCredentials(client: WithAuth): Promise<void> {
  if (process.env.ML_VERTEX_ENDPOINT || !client.auth) return
  try {
    await client.auth.getClient()
  } catch (error) {
    throw vertexAuthError(error)
  }
}

export async function jobServiceClient(region: string): Promise<JobServiceClient> {
  const {v1} = (await importOptional('@google-cloud/aiplatform', () => import('@google-cloud/aiplatform'))).default
  const client = new v1.JobServiceClient(clientOptions(region))
  await checkCredentials(client as unknown as WithAuth)
  return client
}

export async function modelServiceClient(region: string): Promise<ModelServiceClient> {
  const {v1} = (await importOptional('@google-cloud/aiplatform', () => import('@google-cloud/aiplatform'))).default
  const client = new v1.ModelServiceClient(clientOptions(region))
  await checkCredentials(client as unknown as WithAuth)
  return client
}

export async function endpointServiceClient(region: string): Promise<EndpointServiceClient> {
  const {v1} = (await importOptional('@google-cloud/aiplatform', () => import('@google-cloud/aiplatform'))).default
  const client = new v1.EndpointServiceClient(clientOptions(region))
  await checkCredentials(client as unknown as WithAuth)
  return client
}

/** gRPC status codes (google-gax maps HTTP statuses of the REST transport onto these). */
export const Status = {
  CANCELLED: 1,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const

export const codeOf = (error: unknown): number | undefined => {
  const code = (error as {code?: unknown} | undefined)?.code
  return typeof code === 'number' ? code : undefined
}

/** Worth asking again later: the service was briefly unavailable or throttled us. */
export const isTransient = (error: unknown) =>
  [Status.DEADLINE_EXCEEDED, Status.RESOURCE_EXHAUSTED, Status.INTERNAL, Status.UNAVAILABLE].includes(codeOf(error) as 4 | 8 | 13 | 14)

/** Turns an API error into a UserError that says what failed and what to do (exit 5, or 2 for bad input). */
export function vertexError(error: unknown, action: string): Error {
  if (error instanceof UserError) return error
  const code = codeOf(error)
  const message = (error as Error | undefined)?.message ?? String(error)
  if (code === Status.UNAUTHENTICATED || /Could not load the default credentials|invalid_grant|Could not refresh access token/i.test(message)) {
    return vertexAuthError(error)
  }
  if (code === Status.PERMISSION_DENIED) {
    return new UserError(`permission denied to ${action}: ${message}`, {code: 'VERTEX_FORBIDDEN', exit: 'service', cause: error, suggestions: AUTH_HELP.slice(1)})
  }
  if (code === Status.NOT_FOUND) {
    return new UserError(`cannot ${action}: ${message}`, {
      code: 'VERTEX_NOT_FOUND',
      exit: 'usage',
      cause: error,
      suggestions: ['Check the name (projects/<project>/locations/<region>/...) and that train.vertex names the right project and region.'],
    })
  }
  if (code === Status.INVALID_ARGUMENT || code === Status.FAILED_PRECONDITION) {
    return new UserError(`Vertex AI refused to ${action}: ${message}`, {code: 'VERTEX_INVALID', exit: 'usage', cause: error})
  }
  return new UserError(`Vertex AI failed to ${action}: ${message}`, {
    code: 'VERTEX_UNAVAILABLE',
    exit: 'service',
    cause: error,
    suggestions: ['Check connectivity and https://status.cloud.google.com, then try again.'],
  })
}

export async function vertexCall<T>(action: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    throw vertexError(error, action)
  }
}

/**
 * train.vertex's project and region from the config, for commands given a bare job id; a full job
 * name needs no config, so a missing config file is fine then.
 */
export async function optionalVertexLocation(configFile: string, jobRef: string): Promise<VertexLocation | undefined> {
  if (locationOfName(jobRef)) return undefined
  const {loadConfig} = await import('../config/load.js')
  const vertex = (await loadConfig(configFile)).config.train.vertex
  return vertex && {project: vertex.project, region: vertex.region}
}
