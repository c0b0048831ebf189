// `ml deploy vertex` through the real CLI and the real @google-cloud/aiplatform EndpointService client,
// against the Vertex AI stand-in: endpoint creation, deployment with dedicated autoscaled resources, a
// canary, a traffic shift, a rollback, and the errors a user meets.
import '../../support/loopback-only.js'
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {parse, stringify} from 'yaml'
import {splitTraffic} from '../../../src/lib/deploy/vertex.js'
import {runJson} from '../../support/cli.js'
import {gsConfig, startGoogleCloud, type GoogleCloudStandIns} from '../../support/cloud-fixtures.js'
import type {VertexServer} from '../../support/vertex-server.js'

const PARENT = 'projects/ml-test-project/locations/us-central1'

interface Deployed {
  action: string
  endpoint: string
  endpointDisplayName: string
  deployedModelId: string
  deployedModels: Array<{id: string; model: string; trafficPercent: number}>
}

describe('ml deploy vertex', () => {
  let cloud: GoogleCloudStandIns
  let vertex: VertexServer
  let dir: string
  let env: NodeJS.ProcessEnv
  let config: string
  const models = [`${PARENT}/models/11`, `${PARENT}/models/12`]

  before(async () => {
    cloud = await startGoogleCloud('ml-deploy-vertex-', ['ml-deploy'])
    ;({vertex, dir, env} = cloud)
    // Two versions registered by `ml export --to vertex` (the registry's side of it).
    for (const name of models) vertex.models.set(name, {name, displayName: 'digits'})
    config = path.join(dir, 'ml.yaml')
    const parsed = parse(gsConfig('ml-deploy', 'proj')) as Record<string, any>
    parsed.deploy = {vertex: {machineType: 'n1-standard-8', minReplicas: 2, maxReplicas: 5, targetCpuUtilization: 70}}
    await writeFile(config, stringify(parsed))
  })
  after(() => cloud.close())

  const deploy = (args: string[]) => runJson<Deployed>(['deploy', 'vertex', '--config', config, ...args], {env, cwd: dir})

  it('splits traffic into whole percentages summing to 100', () => {
    assert.deepEqual(splitTraffic({}, [], '0', 30), {'0': 100})
    assert.deepEqual(splitTraffic({a: 100}, ['a'], '0', 10), {'0': 10, a: 90})
    assert.deepEqual(splitTraffic({a: 50, b: 50}, ['a', 'b'], '0', 33), {'0': 33, a: 34, b: 33})
    assert.deepEqual(splitTraffic({a: 10, b: 90}, ['a'], undefined, 0), {a: 100})
    assert.deepEqual(splitTraffic({a: 0, b: 0}, ['a', 'b'], undefined, 0), {a: 50, b: 50})
  })

  it('deploys the newest registered model to a new endpoint with dedicated, autoscaled resources', async () => {
    const {code, json, stderr} = await deploy([])
    assert.equal(code, 0, stderr)
    assert.equal(json.action, 'deployed')
    assert.equal(json.endpointDisplayName, 'digits-endpoint')
    assert.match(json.endpoint, /^projects\/ml-test-project\/locations\/us-central1\/endpoints\/\d+$/)
    // The newest model named like the config: the registry lists newest first.
    assert.deepEqual(json.deployedModels.map((d) => [d.model, d.trafficPercent]), [[models[1], 100]])
    const request = vertex.requests.find((r) => r.path.endsWith(':deployModel'))!
    const body = request.body as {deployedModel: Record<string, any>; trafficSplit: Record<string, number>}
    assert.deepEqual(body.deployedModel.dedicatedResources, {
      machineSpec: {machineType: 'n1-standard-8'},
      minReplicaCount: 2,
      maxReplicaCount: 5,
      autoscalingMetricSpecs: [{metricName: 'aiplatform.googleapis.com/prediction/online/cpu/utilization', target: 70}],
    })
    assert.deepEqual(body.trafficSplit, {'0': 100})
  })

  it('deploys another version as a 10% canary on the same endpoint, shifts it to 50%, then rolls back', async () => {
    const endpoints = () => vertex.requests.filter((r) => r.method === 'POST' && r.path === `/${PARENT}/endpoints`).length
    const created = endpoints()
    const canary = await deploy(['--model', models[0]!, '--traffic', '10'])
    assert.equal(canary.code, 0, canary.stderr)
    assert.equal(endpoints(), created, 'the existing endpoint is reused')
    const byModel = (d: Deployed) => Object.fromEntries(d.deployedModels.map((m) => [m.model, m.trafficPercent]))
    assert.deepEqual(byModel(canary.json), {[models[1]!]: 90, [models[0]!]: 10})

    const shifted = await deploy(['--model', models[0]!, '--traffic', '50'])
    assert.equal(shifted.code, 0, shifted.stderr)
    assert.equal(shifted.json.action, 'traffic')
    assert.deepEqual(byModel(shifted.json), {[models[1]!]: 50, [models[0]!]: 50})
    assert.equal(vertex.requests.filter((r) => r.path.endsWith(':deployModel')).length, 2, 'a traffic shift deploys nothing')

    const status = await deploy(['--status'])
    assert.deepEqual(byModel(status.json), byModel(shifted.json))

    const back = await deploy(['--rollback'])
    assert.equal(back.code, 0, back.stderr)
    assert.equal(back.json.action, 'rolled-back')
    assert.equal(back.json.deployedModelId, canary.json.deployedModelId)
    assert.deepEqual(byModel(back.json), {[models[1]!]: 100})
    const undeploy = vertex.requests.find((r) => r.path.endsWith(':undeployModel'))!
    assert.deepEqual((undeploy.body as {trafficSplit: Record<string, number>}).trafficSplit, {[back.json.deployedModels[0]!.id]: 100})

    const again = await deploy(['--rollback'])
    assert.equal(again.code, 2)
    assert.match(JSON.stringify(again.json), /nothing to roll back to/)
  })

  it('names what is missing: train.vertex, a registered model, a valid percentage', async () => {
    const bare = path.join(dir, 'bare.yaml')
    const parsed = parse(gsConfig('ml-deploy', 'proj')) as Record<string, any>
    delete parsed.train.vertex
    await writeFile(bare, stringify(parsed))
    const noVertex = await runJson<{error: {message: string}}>(['deploy', 'vertex', '--config', bare], {env, cwd: dir})
    assert.equal(noVertex.code, 2)
    assert.match(noVertex.json.error.message, /train\.vertex/)

    const other = path.join(dir, 'other.yaml')
    const renamed = parse(gsConfig('ml-deploy', 'proj')) as Record<string, any>
    renamed.name = 'letters'
    await writeFile(other, stringify(renamed))
    const noModel = await runJson<{error: {code: string; suggestions: string[]}}>(['deploy', 'vertex', '--config', other], {env, cwd: dir})
    assert.equal(noModel.code, 2)
    assert.equal(noModel.json.error.code, 'VERTEX_NOT_FOUND')
    assert.match(noModel.json.error.suggestions.join(' '), /ml export --to vertex/)

    const badTraffic = await deploy(['--traffic', '150'])
    assert.equal(badTraffic.code, 2)
    const missing = await deploy(['--model', `${PARENT}/models/999`])
    assert.notEqual(missing.code, 0)
    assert.match(JSON.stringify(missing.json), /999/)
  })
})
