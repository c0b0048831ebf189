// A Vertex AI stand-in for tests: the REST (fallback) transport of @google-cloud/aiplatform's JobService,
// ModelService and EndpointService on 127.0.0.1: custom jobs, tuning jobs, model uploads and endpoints
// (create, deploy, undeploy, traffic splits), with states set by the test.
import {EventEmitter} from 'node:events'
import http from 'node:http'
import type {AddressInfo} from 'node:net'

export type JobState =
  | 'JOB_STATE_QUEUED'
  | 'JOB_STATE_PENDING'
  | 'JOB_STATE_RUNNING'
  | 'JOB_STATE_SUCCEEDED'
  | 'JOB_STATE_FAILED'
  | 'JOB_STATE_CANCELLING'
  | 'JOB_STATE_CANCELLED'
  | 'JOB_STATE_PAUSED'
  | 'JOB_STATE_EXPIRED'
  | 'JOB_STATE_UPDATING'
  | 'JOB_STATE_PARTIALLY_SUCCEEDED'

const ENDED = new Set<string>(['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED', 'JOB_STATE_EXPIRED', 'JOB_STATE_PARTIALLY_SUCCEEDED'])

/** A job resource as JSON (camelCase, enums as names, timestamps as RFC 3339), as the REST API returns it. */
export type JobResource = Record<string, unknown> & {name: string; state: JobState; displayName: string}

export interface Trial {
  id: string
  state: 'REQUESTED' | 'ACTIVE' | 'STOPPING' | 'SUCCEEDED' | 'INFEASIBLE'
  parameters: Array<{parameterId: string; value: number | string}>
  finalMeasurement?: {stepCount?: string; metrics: Array<{metricId: string; value: number}>}
  customJob?: string
}

export interface SeenRequest {
  method: string
  /** Path without the /v1 (or /ui) prefix. */
  path: string
  query: Record<string, string>
  body: unknown
  authorization: string | undefined
  status: number
}

interface Operation {
  name: string
  done: boolean
  metadata: Record<string, unknown>
  response?: Record<string, unknown>
  error?: {code: number; message: string}
  /** What the service does when the operation finishes; returns the operation's response. */
  complete?: () => Record<string, unknown>
}

const TYPE = 'type.googleapis.com/google.cloud.aiplatform.v1.'

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly rpcStatus: string,
  ) {
    super(message)
  }
}

const now = () => new Date().toISOString()

export class VertexServer extends EventEmitter {
  readonly requests: SeenRequest[] = []
  readonly jobs = new Map<string, JobResource>()
  readonly operations = new Map<string, Operation>()
  readonly models = new Map<string, Record<string, unknown>>()
  readonly endpoints = new Map<string, Record<string, any>>()
  /** State of a job right after it is created. */
  initialState: JobState = 'JOB_STATE_PENDING'
  /** A cancel moves a job to CANCELLING; with this set it is CANCELLED at once. */
  cancelImmediately = true
  /** Upload operations are done on their first poll (else the test completes them). */
  completeUploadsOnPoll = true
  private failures: Array<{status: number; remaining: number}> = []
  private nextId = 1000
  private server: http.Server | undefined
  url = ''
  port = 0

  static async start(): Promise<VertexServer> {
    const vertex = new VertexServer()
    vertex.server = http.createServer((req, res) => {
      vertex.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) vertex.send(res, 500, {error: {code: 500, message: (error as Error).message, status: 'INTERNAL'}})
        else res.destroy()
      })
    })
    vertex.server.keepAliveTimeout = 1000
    await new Promise<void>((resolve) => vertex.server!.listen(0, '127.0.0.1', resolve))
    vertex.port = (vertex.server.address() as AddressInfo).port
    vertex.url = `http://127.0.0.1:${vertex.port}`
    return vertex
  }

  async close(): Promise<void> {
    const server = this.server
    if (!server) return
    this.server = undefined
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  /** Answers the next `count` requests with `status` (e.g. 503) instead of serving them. */
  failNext(count: number, status = 503): void {
    this.failures.push({status, remaining: count})
  }

  job(name: string): JobResource {
    const job = this.jobs.get(name)
    if (!job) throw new Error(`no job ${name} (jobs: ${[...this.jobs.keys()].join(', ')})`)
    return job
  }

  /** Moves a job to `state` (as the service would); FAILED takes the error the job shows. */
  advance(name: string, state: JobState, options: {error?: {code: number; message: string}} = {}): JobResource {
    const job = this.job(name)
    job.state = state
    job.updateTime = now()
    if (state === 'JOB_STATE_RUNNING' && !job.startTime) job.startTime = now()
    if (ENDED.has(state)) job.endTime = now()
    if (options.error) job.error = options.error
    this.emit('state', name, state)
    return job
  }

  /** Sets the trials a tuning job reports. */
  setTrials(name: string, trials: Trial[]): void {
    this.job(name).trials = trials.map((t) => ({...t, startTime: now(), ...(t.state === 'SUCCEEDED' || t.state === 'INFEASIBLE' ? {endTime: now()} : {})}))
  }

  /** Resolves with the name of the next job created (or the first not yet handed out) of this kind. */
  waitForJob(kind: 'customJobs' | 'hyperparameterTuningJobs' = 'customJobs'): Promise<string> {
    const handed = (this.handed ??= new Set())
    const existing = [...this.jobs.keys()].find((n) => n.includes(`/${kind}/`) && !handed.has(n))
    if (existing) {
      handed.add(existing)
      return Promise.resolve(existing)
    }
    return new Promise((resolve) => {
      const onCreate = (name: string) => {
        if (!name.includes(`/${kind}/`) || handed.has(name)) return
        this.off('created', onCreate)
        handed.add(name)
        resolve(name)
      }
      this.on('created', onCreate)
    })
  }
  private handed: Set<string> | undefined

  /** Resolves once a client has read job `name` in `state` (so the test knows the client saw it). */
  waitForPoll(name: string, state: JobState): Promise<void> {
    return new Promise((resolve) => {
      const onPoll = (polled: string, polledState: string) => {
        if (polled !== name || polledState !== state) return
        this.off('polled', onPoll)
        resolve()
      }
      this.on('polled', onPoll)
    })
  }

  /** Resolves when a request matching `test` has been answered. */
  waitForRequest(test: (r: SeenRequest) => boolean): Promise<SeenRequest> {
    const done = this.requests.find((r) => r.status !== 0 && test(r))
    if (done) return Promise.resolve(done)
    return new Promise((resolve) => {
      const onRequest = (r: SeenRequest) => {
        if (!test(r)) return
        this.off('request', onRequest)
        resolve(r)
      }
      this.on('request', onRequest)
    })
  }

  completeOperation(name: string, outcome: {error?: {code: number; message: string}} = {}): void {
    const op = this.operations.get(name)
    if (!op) throw new Error(`no operation ${name}`)
    this.finishOperation(op, outcome.error)
  }

  private finishOperation(op: Operation, error?: {code: number; message: string}): void {
    op.done = true
    if (error) {
      op.error = error
      return
    }
    if (op.complete) {
      op.response = op.complete()
      return
    }
    const modelName = op.name.replace(/\/operations\/[^/]+$/, '')
    this.models.set(modelName, {...(this.models.get(modelName) ?? {}), name: modelName})
    op.response = {'@type': 'type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse', model: modelName, modelVersionId: '1'}
  }

  private send(res: http.ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body)
    res.writeHead(status, {'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text)})
    res.end(text)
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString('utf8')
    let body: unknown
    try {
      body = text ? JSON.parse(text) : undefined
    } catch {
      body = text
    }
    const path = url.pathname.replace(/^\/(v1|ui)\//, '/')
    const seen: SeenRequest = {
      method: req.method ?? 'GET',
      path,
      query: Object.fromEntries(url.searchParams),
      body,
      authorization: req.headers.authorization,
      status: 0,
    }
    this.requests.push(seen)
    res.on('finish', () => {
      seen.status = res.statusCode
      this.emit('request', seen)
    })
    const failure = this.failures.find((f) => f.remaining > 0)
    if (failure) {
      failure.remaining--
      this.send(res, failure.status, {error: {code: failure.status, message: `injected ${failure.status}`, status: failure.status === 429 ? 'RESOURCE_EXHAUSTED' : 'UNAVAILABLE'}})
      return
    }
    try {
      this.route(res, seen)
    } catch (error) {
      if (!(error instanceof HttpError)) throw error
      this.send(res, error.status, {error: {code: error.status, message: error.message, status: error.rpcStatus}})
    }
  }

  private route(res: http.ServerResponse, req: SeenRequest): void {
    const {method, path} = req
    let m = /^\/(projects\/[^/]+\/locations\/[^/]+)\/(customJobs|hyperparameterTuningJobs)$/.exec(path)
    if (m && method === 'POST') return this.send(res, 200, this.create(m[1]!, m[2] as 'customJobs', req.body as Record<string, unknown>))
    if (m && method === 'GET') return this.send(res, 200, this.list(m[1]!, m[2]!, req.query))
    m = /^\/(projects\/[^/]+\/locations\/[^/]+\/(customJobs|hyperparameterTuningJobs)\/[^/:]+)(:cancel)?$/.exec(path)
    if (m) {
      const job = this.jobs.get(m[1]!)
      if (!job) throw new HttpError(404, `${m[1]} not found`, 'NOT_FOUND')
      if (m[3] && method === 'POST') {
        if (ENDED.has(job.state)) throw new HttpError(400, `job ${job.name} is already in state ${job.state}`, 'FAILED_PRECONDITION')
        this.advance(job.name, this.cancelImmediately ? 'JOB_STATE_CANCELLED' : 'JOB_STATE_CANCELLING')
        if (this.cancelImmediately) job.error = {code: 1, message: 'CANCELED'}
        this.emit('cancelled', job.name)
        return this.send(res, 200, {})
      }
      if (!m[3] && method === 'GET') {
        this.send(res, 200, job)
        this.emit('polled', job.name, job.state)
        return
      }
    }
    m = /^\/(projects\/[^/]+\/locations\/[^/]+)\/models:upload$/.exec(path)
    if (m && method === 'POST') return this.send(res, 200, this.upload(m[1]!, req.body as {model?: Record<string, unknown>}))
    m = /^\/(projects\/[^/]+\/locations\/[^/]+)\/models$/.exec(path)
    if (m && method === 'GET') return this.send(res, 200, {models: this.listModels(m[1]!, req.query.filter)})
    m = /^\/(projects\/[^/]+\/locations\/[^/]+)\/endpoints$/.exec(path)
    if (m && method === 'POST') return this.send(res, 200, this.createEndpoint(m[1]!, req.body as Record<string, unknown>))
    if (m && method === 'GET') {
      const wanted = /display_name="([^"]*)"/.exec(req.query.filter ?? '')?.[1]
      const endpoints = [...this.endpoints.values()].filter((e) => e.name.startsWith(`${m![1]}/endpoints/`) && (wanted === undefined || e.displayName === wanted))
      return this.send(res, 200, {endpoints})
    }
    m = /^\/(projects\/[^/]+\/locations\/[^/]+\/endpoints\/[^/:]+)(:deployModel|:undeployModel)?$/.exec(path)
    if (m) {
      const endpoint = this.endpoints.get(m[1]!)
      if (!endpoint) throw new HttpError(404, `${m[1]} not found`, 'NOT_FOUND')
      if (!m[2] && method === 'GET') return this.send(res, 200, endpoint)
      if (!m[2] && method === 'PATCH') return this.send(res, 200, this.updateEndpoint(endpoint, req.body as Record<string, any>, req.query.updateMask))
      if (m[2] === ':deployModel' && method === 'POST') return this.send(res, 200, this.deployModel(endpoint, req.body as Record<string, any>))
      if (m[2] === ':undeployModel' && method === 'POST') return this.send(res, 200, this.undeployModel(endpoint, req.body as Record<string, any>))
    }
    m = /^\/(projects\/[^/]+\/locations\/[^/]+\/(?:(?:models|endpoints)\/[^/]+\/)?operations\/[^/]+)$/.exec(path)
    if (m && method === 'GET') {
      const op = this.operations.get(m[1]!)
      if (!op) throw new HttpError(404, `operation ${m[1]} not found`, 'NOT_FOUND')
      if (!op.done && this.completeUploadsOnPoll) this.finishOperation(op)
      return this.send(res, 200, this.operationJson(op))
    }
    throw new HttpError(404, `no route for ${method} ${path}`, 'NOT_FOUND')
  }

  private create(parent: string, kind: 'customJobs' | 'hyperparameterTuningJobs', spec: Record<string, unknown>): JobResource {
    if (!spec || typeof spec.displayName !== 'string' || !spec.displayName) throw new HttpError(400, 'displayName is required', 'INVALID_ARGUMENT')
    const jobSpec = (kind === 'customJobs' ? spec.jobSpec : spec.trialJobSpec) as {workerPoolSpecs?: unknown[]} | undefined
    if (!jobSpec?.workerPoolSpecs?.length) throw new HttpError(400, 'workerPoolSpecs is required', 'INVALID_ARGUMENT')
    const name = `${parent}/${kind}/${this.nextId++}`
    const job: JobResource = {...spec, name, state: this.initialState, displayName: spec.displayName, createTime: now(), updateTime: now()}
    if (kind === 'hyperparameterTuningJobs') job.trials = []
    this.jobs.set(name, job)
    this.emit('created', name)
    return job
  }

  private list(parent: string, kind: string, query: Record<string, string>): Record<string, unknown> {
    const all = [...this.jobs.values()].filter((j) => j.name.startsWith(`${parent}/${kind}/`))
    const size = Number(query.pageSize) || 100
    const start = Number(query.pageToken) || 0
    const page = all.slice(start, start + size)
    const key = kind === 'customJobs' ? 'customJobs' : 'hyperparameterTuningJobs'
    return {[key]: page, ...(start + size < all.length ? {nextPageToken: String(start + size)} : {})}
  }

  private upload(parent: string, body: {model?: Record<string, unknown>}): Record<string, unknown> {
    const model = body?.model
    if (!model?.displayName) throw new HttpError(400, 'model.displayName is required', 'INVALID_ARGUMENT')
    const modelName = `${parent}/models/${this.nextId++}`
    this.models.set(modelName, {...model, name: modelName})
    const op: Operation = {
      name: `${modelName}/operations/${this.nextId++}`,
      done: false,
      metadata: {
        '@type': 'type.googleapis.com/google.cloud.aiplatform.v1.UploadModelOperationMetadata',
        genericMetadata: {createTime: now(), updateTime: now()},
      },
    }
    this.operations.set(op.name, op)
    this.emit('upload', op.name, model)
    return this.operationJson(op)
  }

  private listModels(parent: string, filter: string | undefined): Array<Record<string, unknown>> {
    const wanted = /display_name="([^"]*)"/.exec(filter ?? '')?.[1]
    return [...this.models.values()]
      .filter((m) => String(m.name).startsWith(`${parent}/models/`) && (wanted === undefined || m.displayName === wanted))
      .reverse()
  }

  private operation(parentName: string, metadataType: string, complete: () => Record<string, unknown>): Record<string, unknown> {
    const op: Operation = {
      name: `${parentName}/operations/${this.nextId++}`,
      done: false,
      metadata: {'@type': TYPE + metadataType, genericMetadata: {createTime: now(), updateTime: now()}},
      complete,
    }
    this.operations.set(op.name, op)
    return this.operationJson(op)
  }

  /** A traffic split must name deployed models (or "0", the one being deployed) and sum to 100. */
  private checkSplit(split: Record<string, number> | undefined, ids: string[], allowEmpty: boolean): Record<string, number> {
    const entries = Object.entries(split ?? {})
    if (entries.length === 0 && allowEmpty) return {}
    for (const [id, pct] of entries) {
      if (!ids.includes(id)) throw new HttpError(400, `trafficSplit names ${id}, which is not deployed on the endpoint`, 'INVALID_ARGUMENT')
      if (!Number.isInteger(pct) || pct < 0 || pct > 100) throw new HttpError(400, `trafficSplit[${id}] = ${pct} is not a percentage`, 'INVALID_ARGUMENT')
    }
    const total = entries.reduce((sum, [, pct]) => sum + pct, 0)
    if (total !== 100) throw new HttpError(400, `trafficSplit sums to ${total}, not 100`, 'INVALID_ARGUMENT')
    return Object.fromEntries(entries)
  }

  private createEndpoint(parent: string, body: Record<string, unknown>): Record<string, unknown> {
    if (!body?.displayName) throw new HttpError(400, 'endpoint.displayName is required', 'INVALID_ARGUMENT')
    const name = `${parent}/endpoints/${this.nextId++}`
    return this.operation(name, 'CreateEndpointOperationMetadata', () => {
      const endpoint = {...body, name, deployedModels: [], trafficSplit: {}, createTime: now()}
      this.endpoints.set(name, endpoint)
      this.emit('endpoint-created', name)
      return {'@type': TYPE + 'Endpoint', ...endpoint}
    })
  }

  private updateEndpoint(endpoint: Record<string, any>, body: Record<string, any>, updateMask: string | undefined): Record<string, unknown> {
    if (!/traffic_?split/i.test(updateMask ?? '')) throw new HttpError(400, `updateMask ${updateMask} is not supported here`, 'INVALID_ARGUMENT')
    endpoint.trafficSplit = this.checkSplit(body.trafficSplit, endpoint.deployedModels.map((d: any) => d.id), false)
    return endpoint
  }

  private deployModel(endpoint: Record<string, any>, body: Record<string, any>): Record<string, unknown> {
    const deployed = body?.deployedModel
    if (!deployed?.model || !this.models.has(deployed.model)) throw new HttpError(404, `model ${deployed?.model} not found`, 'NOT_FOUND')
    const resources = deployed.dedicatedResources
    if (!resources?.machineSpec?.machineType || !(resources.minReplicaCount >= 1)) throw new HttpError(400, 'deployedModel.dedicatedResources with machineSpec and minReplicaCount >= 1 is required', 'INVALID_ARGUMENT')
    const split = this.checkSplit(body.trafficSplit, ['0', ...endpoint.deployedModels.map((d: any) => d.id)], endpoint.deployedModels.length === 0)
    const id = String(this.nextId++)
    return this.operation(endpoint.name, 'DeployModelOperationMetadata', () => {
      const model = {...deployed, id, createTime: now()}
      endpoint.deployedModels.push(model)
      endpoint.trafficSplit = Object.keys(split).length ? Object.fromEntries(Object.entries(split).map(([k, v]) => [k === '0' ? id : k, v])) : {[id]: 100}
      return {'@type': TYPE + 'DeployModelResponse', deployedModel: model}
    })
  }

  private undeployModel(endpoint: Record<string, any>, body: Record<string, any>): Record<string, unknown> {
    const id = String(body?.deployedModelId ?? '')
    if (!endpoint.deployedModels.some((d: any) => d.id === id)) throw new HttpError(404, `deployed model ${id} not found`, 'NOT_FOUND')
    const remaining = endpoint.deployedModels.filter((d: any) => d.id !== id).map((d: any) => d.id)
    // The service refuses to undeploy a model that still has traffic unless the new split moves it.
    const split = body.trafficSplit && Object.keys(body.trafficSplit).length ? this.checkSplit(body.trafficSplit, remaining, false) : undefined
    if (!split && (endpoint.trafficSplit[id] ?? 0) > 0 && remaining.length > 0) throw new HttpError(400, `deployed model ${id} still has traffic`, 'FAILED_PRECONDITION')
    return this.operation(endpoint.name, 'UndeployModelOperationMetadata', () => {
      endpoint.deployedModels = endpoint.deployedModels.filter((d: any) => d.id !== id)
      endpoint.trafficSplit = split ?? {}
      return {'@type': TYPE + 'UndeployModelResponse'}
    })
  }

  private operationJson(op: Operation): Record<string, unknown> {
    return {
      name: op.name,
      metadata: op.metadata,
      done: op.done,
      ...(op.response ? {response: op.response} : {}),
      ...(op.error ? {error: op.error} : {}),
    }
  }
}
