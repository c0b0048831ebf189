// `ml deploy vertex`: a model registered by `ml export --to vertex` deployed to a Vertex AI Endpoint
// (created when missing) with dedicated, autoscaled resources; canary traffic splits, rollback and
// status. Vertex AI runs the ml image's `ml serve` behind the endpoint (see export/vertex.ts).
import type {LoadedConfig} from '../config/load.js'
import type {VertexEndpointConfig} from '../config/deploy-schema.js'
import {endpointServiceClient, modelServiceClient, parentOf, vertexCall, type EndpointServiceClient, type ModelServiceClient} from '../cloud/vertex-client.js'
import {vertexSettings} from '../train/vertex.js'
import {UserError} from '../errors.js'

export const CPU_UTILIZATION_METRIC = 'aiplatform.googleapis.com/prediction/online/cpu/utilization'

export interface DeployedModelInfo {
  id: string
  model: string
  displayName: string
  /** Share of the endpoint's traffic, 0-100. */
  trafficPercent: number
  createTime?: string
}

export interface VertexDeployResult {
  action: 'deployed' | 'traffic' | 'rolled-back' | 'status'
  endpoint: string
  endpointDisplayName: string
  /** The deployed model this command deployed, moved or removed. */
  deployedModelId?: string
  deployedModels: DeployedModelInfo[]
}

export interface VertexDeployOptions {
  /** projects/<p>/locations/<r>/models/<id>; default: the newest registered model named like the config. */
  model?: string
  /** Percent of the endpoint's traffic for the model (default 100 on a first deployment). */
  traffic?: number
  /** Move all traffic back to the other deployed models and undeploy the newest. */
  rollback?: boolean
  /** Show the endpoint only. */
  status?: boolean
  endpoints?: EndpointServiceClient
  models?: ModelServiceClient
  onProgress?: (message: string) => void
}

// The deployed models' fields are read loosely, as the Vertex AI client types them per API version.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Endpoint = {name?: string | null; displayName?: string | null; deployedModels?: Array<Record<string, any>> | null; trafficSplit?: Record<string, number> | null}

/**
 * Integer percentages for `newId` at `percent` and the others in proportion to their current shares
 * (equal shares when none has traffic), summing to exactly 100 as Vertex AI requires.
 */
export function splitTraffic(current: Record<string, number>, others: string[], newId: string | undefined, percent: number): Record<string, number> {
  const split: Record<string, number> = {}
  if (newId !== undefined) split[newId] = percent
  const rest = newId === undefined ? 100 : 100 - percent
  if (others.length === 0) {
    if (newId !== undefined) split[newId] = 100
    return split
  }
  const weights = others.map((id) => current[id] ?? 0)
  const total = weights.reduce((a, b) => a + b, 0)
  const shares = others.map((_, i) => (total > 0 ? (weights[i]! / total) * rest : rest / others.length))
  const floors = shares.map(Math.floor)
  let left = rest - floors.reduce((a, b) => a + b, 0)
  // Largest remainders get the leftover points, so the split sums to 100.
  const order = shares.map((s, i) => [s - floors[i]!, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1])
  for (const [, i] of order) {
    if (left-- <= 0) break
    floors[i]!++
  }
  others.forEach((id, i) => (split[id] = floors[i]!))
  return split
}

function describe(endpoint: Endpoint): DeployedModelInfo[] {
  const split = endpoint.trafficSplit ?? {}
  return (endpoint.deployedModels ?? []).map((d) => ({
    id: String(d.id),
    model: String(d.model ?? ''),
    displayName: String(d.displayName ?? ''),
    trafficPercent: split[String(d.id)] ?? 0,
    ...(d.createTime ? {createTime: typeof d.createTime === 'string' ? d.createTime : new Date(Number(d.createTime.seconds ?? 0) * 1000).toISOString()} : {}),
  }))
}

function dedicatedResources(v: VertexEndpointConfig): Record<string, unknown> {
  return {
    machineSpec: {
      machineType: v.machineType,
      ...(v.acceleratorType ? {acceleratorType: v.acceleratorType, acceleratorCount: v.acceleratorCount ?? 1} : {}),
    },
    minReplicaCount: v.minReplicas,
    maxReplicaCount: v.maxReplicas,
    autoscalingMetricSpecs: [{metricName: CPU_UTILIZATION_METRIC, target: v.targetCpuUtilization}],
  }
}

export async function deployVertex(loaded: LoadedConfig, options: VertexDeployOptions = {}): Promise<VertexDeployResult> {
  const vertex = vertexSettings(loaded.config, '`ml deploy vertex`')
  const settings = loaded.config.deploy.vertex
  const parent = parentOf(vertex)
  const displayName = settings.endpoint ?? `${loaded.config.name}-endpoint`
  if (options.traffic !== undefined && (!Number.isInteger(options.traffic) || options.traffic < 0 || options.traffic > 100)) {
    throw new UserError(`--traffic ${options.traffic} is not a whole percentage from 0 to 100`, {code: 'DEPLOY_INVALID', exit: 'usage'})
  }
  const endpoints = options.endpoints ?? (await endpointServiceClient(vertex.region))
  const models = options.models ?? (options.status || options.rollback || options.model ? undefined : await modelServiceClient(vertex.region))
  const say = options.onProgress ?? (() => undefined)
  try {
    const [found] = await vertexCall('list endpoints', () => endpoints.listEndpoints({parent, filter: `display_name="${displayName}"`}, {autoPaginate: false}))
    let endpoint = (found as Endpoint[]).find((e) => e.displayName === displayName)
    if (options.status || options.rollback) {
      if (!endpoint) throw new UserError(`no Vertex AI endpoint named ${displayName} in ${parent}`, {code: 'VERTEX_NOT_FOUND', exit: 'usage', suggestions: ['Deploy first: ml deploy vertex --model <model resource name>.']})
      if (options.status) return {action: 'status', endpoint: endpoint.name!, endpointDisplayName: displayName, deployedModels: describe(endpoint)}
      return await rollback(endpoints, endpoint, say)
    }
    const model = options.model ?? (await newestModel(models!, parent, loaded.config.name))
    if (!endpoint) {
      say(`creating Vertex AI endpoint ${displayName} in ${parent}`)
      const [operation] = await vertexCall('create the endpoint', () => endpoints.createEndpoint({parent, endpoint: {displayName, labels: {'ml-tool': 'ml'}}}))
      const [created] = await vertexCall('create the endpoint', () => operation.promise())
      endpoint = created as Endpoint
    }
    const current = describe(endpoint)
    const existing = current.find((d) => d.model === model)
    if (existing) {
      // Already deployed here: only the traffic moves.
      const percent = options.traffic ?? 100
      const trafficSplit = splitTraffic(endpoint.trafficSplit ?? {}, current.filter((d) => d.id !== existing.id).map((d) => d.id), existing.id, percent)
      say(`moving ${percent}% of ${displayName}'s traffic to deployed model ${existing.id}`)
      const [updated] = await vertexCall('update the traffic split', () =>
        endpoints.updateEndpoint({endpoint: {name: endpoint!.name, displayName, trafficSplit}, updateMask: {paths: ['traffic_split']}}),
      )
      return {action: 'traffic', endpoint: endpoint.name!, endpointDisplayName: displayName, deployedModelId: existing.id, deployedModels: describe(updated as Endpoint)}
    }
    const percent = current.length === 0 ? 100 : (options.traffic ?? 100)
    // "0" stands for the model being deployed in DeployModelRequest.trafficSplit.
    const trafficSplit = splitTraffic(endpoint.trafficSplit ?? {}, current.map((d) => d.id), '0', percent)
    say(`deploying ${model} to ${displayName} (${settings.machineType}, ${settings.minReplicas}-${settings.maxReplicas} replicas, ${trafficSplit['0']}% of traffic)`)
    const [operation] = await vertexCall('deploy the model', () =>
      endpoints.deployModel({
        endpoint: endpoint!.name,
        deployedModel: {model, displayName: loaded.config.name, dedicatedResources: dedicatedResources(settings)},
        trafficSplit,
      }),
    )
    const [response] = await vertexCall('deploy the model', () => operation.promise())
    const deployedModelId = String((response as {deployedModel?: {id?: string}}).deployedModel?.id ?? '')
    const [after] = await vertexCall('read the endpoint', () => endpoints.getEndpoint({name: endpoint!.name}))
    return {action: 'deployed', endpoint: endpoint.name!, endpointDisplayName: displayName, deployedModelId, deployedModels: describe(after as Endpoint)}
  } finally {
    if (!options.endpoints) await endpoints.close()
    if (models && !options.models) await models.close()
  }
}

/** The newest deployed model leaves: its traffic goes back to the others, then it is undeployed. */
async function rollback(endpoints: EndpointServiceClient, endpoint: Endpoint, say: (m: string) => void): Promise<VertexDeployResult> {
  const deployed = describe(endpoint)
  if (deployed.length < 2) {
    throw new UserError(`${endpoint.displayName} has ${deployed.length} deployed model(s): nothing to roll back to`, {
      code: 'DEPLOY_NO_PREVIOUS',
      exit: 'usage',
      suggestions: ['Roll back by deploying the previous model version again: ml deploy vertex --model <its resource name>.'],
    })
  }
  const newest = [...deployed].sort((a, b) => (a.createTime ?? '').localeCompare(b.createTime ?? '') || Number(a.id) - Number(b.id)).at(-1)!
  const others = deployed.filter((d) => d.id !== newest.id)
  const trafficSplit = splitTraffic(endpoint.trafficSplit ?? {}, others.map((d) => d.id), undefined, 0)
  say(`moving ${endpoint.displayName}'s traffic back to ${others.map((d) => d.id).join(', ')} and undeploying ${newest.id}`)
  const [operation] = await vertexCall('undeploy the model', () => endpoints.undeployModel({endpoint: endpoint.name, deployedModelId: newest.id, trafficSplit}))
  await vertexCall('undeploy the model', () => operation.promise())
  const [after] = await vertexCall('read the endpoint', () => endpoints.getEndpoint({name: endpoint.name}))
  return {action: 'rolled-back', endpoint: endpoint.name!, endpointDisplayName: endpoint.displayName ?? '', deployedModelId: newest.id, deployedModels: describe(after as Endpoint)}
}

async function newestModel(models: ModelServiceClient, parent: string, name: string): Promise<string> {
  const [list] = await vertexCall('list models', () => models.listModels({parent, filter: `display_name="${name}"`, orderBy: 'create_time desc'}, {autoPaginate: false}))
  const model = (list as Array<{name?: string | null; displayName?: string | null}>).find((m) => m.displayName === name)
  if (!model?.name) {
    throw new UserError(`no model named ${name} in the Vertex AI Model Registry (${parent})`, {
      code: 'VERTEX_NOT_FOUND',
      exit: 'usage',
      suggestions: ['Register one with `ml export --to vertex`, or pass --model <projects/.../models/ID>.'],
    })
  }
  return model.name
}
