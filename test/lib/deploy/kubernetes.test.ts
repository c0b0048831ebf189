import assert from 'node:assert/strict'
import {mkdir, readdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {after, before, describe, it} from 'node:test'
import {ConfigMap} from 'kubernetes-models/v1/ConfigMap'
import {Container} from 'kubernetes-models/v1/Container'
import {Service} from 'kubernetes-models/v1/Service'
import {Deployment} from 'kubernetes-models/apps/v1/Deployment'
import {HorizontalPodAutoscaler} from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler'
import {PodDisruptionBudget} from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import {PrometheusRule} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule'
import {ServiceMonitor} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor'
import {parse, parseAllDocuments, stringify} from 'yaml'
import {loadConfig} from '../../../src/lib/config/load.js'
import {kubernetesPlan, type Manifest} from '../../../src/lib/deploy/kubernetes.js'
import {UserError} from '../../../src/lib/errors.js'
import {runCli, runJson} from '../../support/cli.js'
import {tempDir, writeMnistConfig} from '../../support/fixtures.js'
import {request, startServe, testDigits, trainServeModel, type ServeChild, type ServeModel} from '../../support/serve-fixtures.js'

// Kubernetes' own schemas (kubernetes-models): validate() throws on a wrong type or a missing field.
const MODELS: Record<string, new (data: any) => {validate(): void}> = {
  ConfigMap,
  Deployment,
  Service,
  HorizontalPodAutoscaler,
  PodDisruptionBudget,
  ServiceMonitor,
  PrometheusRule,
}

function validate(manifest: Manifest): void {
  if (manifest.kind === 'InferenceService') {
    // No published schema package for KServe's CRD: check the fields KServe reads, and the container
    // against Kubernetes' Container schema.
    assert.equal(manifest.apiVersion, 'serving.kserve.io/v1beta1')
    assert.equal(manifest.metadata.annotations?.['serving.kserve.io/deploymentMode'], 'RawDeployment')
    const predictor = (manifest as any).spec.predictor
    assert.ok(Number.isInteger(predictor.minReplicas) && Number.isInteger(predictor.maxReplicas))
    assert.equal(predictor.containers.length, 1)
    assert.equal(predictor.containers[0].name, 'kserve-container')
    new Container(predictor.containers[0]).validate()
    return
  }
  const Model = MODELS[manifest.kind]
  assert.ok(Model, `no schema for ${manifest.kind}`)
  new Model(manifest).validate()
}

const byKind = (manifests: Manifest[], kind: string): any => manifests.find((m) => m.kind === kind)

describe('ml deploy kubernetes', () => {
  let dir: string
  let cleanup: () => Promise<void>

  before(async () => {
    ;({dir, cleanup} = await tempDir('ml-deploy-'))
  })
  after(async () => cleanup?.())

  async function config(deploy: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
    const folder = path.join(dir, `c${Math.random().toString(36).slice(2, 8)}`)
    await mkdir(folder, {recursive: true})
    const file = await writeMnistConfig(folder, {name: 'digits'})
    const parsed = parse(await readFile(file, 'utf8')) as Record<string, any>
    Object.assign(parsed, {deploy, ...extra})
    await writeFile(file, stringify(parsed))
    return file
  }

  it('writes objects that Kubernetes, prometheus-operator and KServe schemas accept, with auth and TLS wired in', async () => {
    const file = await config(
      {image: 'us-docker.pkg.dev/p/ml/ml:0.1.0', repository: 'gs://bucket/models', kubernetes: {namespace: 'models', minReplicas: 2, maxReplicas: 6, kserve: {canaryTrafficPercent: 10}}},
      {serve: {auth: {tokenEnv: 'ML_TOKEN'}, tls: {cert: 'c.pem', key: 'k.pem'}, requestTimeoutMs: 10_000}},
    )
    const plan = await kubernetesPlan(await loadConfig(file))
    assert.deepEqual(
      plan.manifests.map((m) => m.kind),
      ['ConfigMap', 'Deployment', 'Service', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'ServiceMonitor', 'PrometheusRule', 'InferenceService'],
    )
    for (const m of plan.manifests) {
      assert.equal(m.metadata.namespace, 'models')
      validate(m)
    }
    const deployment = byKind(plan.manifests, 'Deployment')
    const container = deployment.spec.template.spec.containers[0]
    assert.equal(container.readinessProbe.httpGet.path, '/v2/health/ready')
    assert.equal(container.livenessProbe.httpGet.path, '/v2/health/live')
    assert.equal(container.readinessProbe.httpGet.scheme, 'HTTPS')
    assert.deepEqual(container.env, [{name: 'ML_TOKEN', valueFrom: {secretKeyRef: {name: 'digits-token', key: 'token'}}}])
    // Grace outlasts the shutdown delay (default 5 s) plus the longest request (10 s).
    assert.ok(deployment.spec.template.spec.terminationGracePeriodSeconds > 15)
    const hpa = byKind(plan.manifests, 'HorizontalPodAutoscaler')
    assert.deepEqual(hpa.spec.metrics.map((m: any) => m.type), ['Resource', 'Pods'])
    assert.equal(hpa.spec.metrics[1].pods.metric.name, 'ml_serve_queue_depth')
    assert.equal(byKind(plan.manifests, 'ServiceMonitor').spec.endpoints[0].authorization.credentials.name, 'digits-token')
    assert.equal(byKind(plan.manifests, 'InferenceService').spec.predictor.canaryTrafficPercent, 10)
    const podConfig = parse(byKind(plan.manifests, 'ConfigMap').data['ml.yaml'])
    assert.equal(podConfig.serve.repository, 'gs://bucket/models')
    assert.deepEqual(podConfig.serve.tls, {cert: '/etc/ml-tls/tls.crt', key: '/etc/ml-tls/tls.key'})
  })

  it('exposes gRPC on its own named port when serve.grpc is set, and not otherwise', async () => {
    const plain = await kubernetesPlan(await loadConfig(await config({image: 'ml:1', repository: 'gs://b/m'})))
    assert.deepEqual(byKind(plain.manifests, 'Deployment').spec.template.spec.containers[0].ports.map((p: any) => p.name), ['http'])
    assert.equal(parse(byKind(plain.manifests, 'ConfigMap').data['ml.yaml']).serve.grpc, undefined)
    const file = await config({image: 'ml:1', repository: 'gs://b/m', kubernetes: {kserve: {}}}, {serve: {grpc: {port: 0}}})
    const plan = await kubernetesPlan(await loadConfig(file))
    plan.manifests.forEach(validate)
    const container = byKind(plan.manifests, 'Deployment').spec.template.spec.containers[0]
    assert.deepEqual(container.ports.map((p: any) => [p.name, p.containerPort]), [['http', 8080], ['grpc', 8081]])
    // The pod's server listens where the container port says.
    assert.deepEqual(parse(byKind(plan.manifests, 'ConfigMap').data['ml.yaml']).serve.grpc, {port: 8081})
    const grpc = byKind(plan.manifests, 'Service').spec.ports.find((p: any) => p.name === 'grpc')
    assert.deepEqual(grpc, {name: 'grpc', port: 8081, targetPort: 'grpc', protocol: 'TCP', appProtocol: 'kubernetes.io/h2c'})
    // A KServe predictor takes one port: HTTP.
    assert.deepEqual(byKind(plan.manifests, 'InferenceService').spec.predictor.containers[0].ports.map((p: any) => p.name), ['http'])
    const tls = await kubernetesPlan(await loadConfig(await config({image: 'ml:1', repository: 'gs://b/m'}, {serve: {grpc: {port: 0}, tls: {cert: 'c.pem', key: 'k.pem'}}})))
    assert.equal(byKind(tls.manifests, 'Service').spec.ports.find((p: any) => p.name === 'grpc').appProtocol, undefined)
  })

  it('the schemas catch a wrong type, so the validation above can fail', async () => {
    const plan = await kubernetesPlan(await loadConfig(await config({image: 'ml:1', repository: 'gs://b/m'})))
    const hpa = structuredClone(byKind(plan.manifests, 'HorizontalPodAutoscaler'))
    hpa.spec.maxReplicas = 'five'
    assert.throws(() => validate(hpa), /maxReplicas/)
    const deployment = structuredClone(byKind(plan.manifests, 'Deployment'))
    deployment.spec.template.spec.containers[0].ports[0].containerPort = '8080'
    assert.throws(() => validate(deployment), /containerPort/)
  })

  it('refuses a config the pods could not serve, naming what to set', async () => {
    await assert.rejects(kubernetesPlan(await loadConfig(await config({repository: 'gs://b/m'}))), (e: unknown) => e instanceof UserError && e.code === 'DEPLOY_NO_IMAGE' && /deploy\.image/.test(e.suggestions.join(' ')))
    // export.dir on the local disk and no deploy.repository.
    await assert.rejects(kubernetesPlan(await loadConfig(await config({image: 'ml:1'}))), (e: unknown) => e instanceof UserError && e.code === 'DEPLOY_NO_REPOSITORY' && /export\.dir/.test(e.message))
    await assert.rejects(kubernetesPlan(await loadConfig(await config({image: 'ml:1', repository: 'models'}))), (e: unknown) => e instanceof UserError && e.code === 'DEPLOY_INVALID')
    const bad = await config({image: 'ml:1', repository: 'gs://b/m', kubernetes: {minReplicas: 5, maxReplicas: 2}})
    const {code, json} = await runJson<{error: {code: string; message: string}}>(['deploy', 'kubernetes', '--config', bad])
    assert.equal(code, 2)
    assert.match(json.error.message, /minReplicas/)
  })

  it('prints multi-document YAML for kubectl, or writes one file per object with --out', async () => {
    const file = await config({image: 'ml:1', repository: 'gs://b/m'})
    const printed = await runCli(['deploy', 'kubernetes', '--config', file])
    assert.equal(printed.code, 0, printed.stderr)
    const docs = parseAllDocuments(printed.stdout).map((d) => d.toJS() as Manifest)
    assert.deepEqual(docs.map((d) => d.kind), ['ConfigMap', 'Deployment', 'Service', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'ServiceMonitor', 'PrometheusRule'])
    docs.forEach(validate)
    const out = path.join(dir, 'k8s')
    const written = await runJson<{objects: Array<{kind: string; file: string}>; out: string}>(['deploy', 'kubernetes', '--config', file, '--out', out, '--kserve'])
    assert.equal(written.code, 0, written.stderr)
    assert.deepEqual((await readdir(out)).sort(), written.json.objects.map((o) => o.file).sort())
    assert.equal(written.json.objects.at(-1)!.kind, 'InferenceService')
    assert.deepEqual(parse(await readFile(path.join(out, written.json.objects[1]!.file), 'utf8')), docs[1])
  })

  describe('against a real `ml serve` started as the pod would start it', () => {
    let model: ServeModel
    let server: ServeChild | undefined

    before(async () => {
      model = await trainServeModel(path.join(dir, 'served'), {train: 100, test: 20})
    })
    after(async () => {
      if (server && server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL')
      await server?.done
    })

    it('answers the probes, the ServiceMonitor path and every metric the HPA and the alert rules use, and stops within the grace period', async () => {
      const parsed = parse(await readFile(model.config, 'utf8')) as Record<string, any>
      // The models baked into the image at an absolute path (here: this test's repository).
      parsed.deploy = {image: 'ml:test', repository: model.repository, shutdownDelayMs: 300}
      parsed.serve = {auth: {tokenEnv: 'ML_TOKEN'}, pollIntervalMs: 0, instances: 1}
      await writeFile(model.config, stringify(parsed))
      const plan = await kubernetesPlan(await loadConfig(model.config))
      const deployment = byKind(plan.manifests, 'Deployment')
      const container = deployment.spec.template.spec.containers[0]
      // The container's command, with the ConfigMap's ml.yaml in place of the mount.
      const podDir = path.join(dir, 'pod')
      await mkdir(podDir, {recursive: true})
      await writeFile(path.join(podDir, 'ml.yaml'), byKind(plan.manifests, 'ConfigMap').data['ml.yaml'])
      const args = (container.args as string[]).map((a) => (a === '/etc/ml/ml.yaml' ? path.join(podDir, 'ml.yaml') : a))
      assert.equal(args[0], 'serve')
      // Port 0 instead of 8080 (the test must not need a fixed port); the manifest's port is checked below.
      server = await startServe([...args.slice(1), '--json'], {env: {ML_PORT: '0', ML_TOKEN: 'secret-token'}})
      assert.equal(container.ports[0].containerPort, 8080)
      assert.equal(parse(byKind(plan.manifests, 'ConfigMap').data['ml.yaml']).serve.port, 8080)

      for (const probe of [container.startupProbe, container.readinessProbe, container.livenessProbe]) {
        assert.equal(probe.httpGet.port, 'http')
        assert.equal((await request(`${server.url}${probe.httpGet.path}`)).status, 200, probe.httpGet.path)
      }
      // One inference, so that every per-model series exists.
      const digit = (await testDigits(model.dir, 1))[3]!
      const body = JSON.stringify({inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [digit.png.toString('base64')]}]})
      const infer = await request(`${server.url}/v2/models/digits/infer`, {method: 'POST', body, headers: {'content-type': 'application/json', authorization: 'Bearer secret-token'}})
      assert.equal(infer.status, 200, infer.text)
      const endpoint = byKind(plan.manifests, 'ServiceMonitor').spec.endpoints[0]
      assert.equal((await request(`${server.url}${endpoint.path}`)).status, 401, 'metrics need the token the ServiceMonitor sends')
      const metrics = await request(`${server.url}${endpoint.path}`, {headers: {authorization: 'Bearer secret-token'}})
      assert.equal(metrics.status, 200)
      const exported = new Set([...metrics.text.matchAll(/^([a-z_:]+?)(?:_bucket|_sum|_count)?[{ ]/gm)].map((m) => m[1]!))
      const hpa = byKind(plan.manifests, 'HorizontalPodAutoscaler')
      assert.ok(exported.has(hpa.spec.metrics[1].pods.metric.name))
      const rules = byKind(plan.manifests, 'PrometheusRule').spec.groups.flatMap((g: any) => g.rules.map((r: any) => r.expr as string)).join('\n')
      const used = new Set([...rules.matchAll(/\b(ml_serve_[a-z_]+?)(?:_bucket)?\b/g)].map((m) => m[1]!))
      assert.ok(used.size >= 3)
      for (const metric of used) assert.ok(exported.has(metric), `the alert rules use ${metric}, which ml serve does not export`)

      const stopping = Date.now()
      server.child.kill('SIGTERM')
      const result = await server.done
      assert.equal(result.code, 0, result.stderr)
      assert.ok(Date.now() - stopping < deployment.spec.template.spec.terminationGracePeriodSeconds * 1000)
    })
  })
})
