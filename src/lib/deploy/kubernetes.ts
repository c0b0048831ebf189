// Kubernetes manifests for `ml serve`: the objects a cluster needs to run the config's model repository
// behind a Service, scaled by an HPA on CPU and on queue depth, watched by prometheus-operator, and
// optionally as a KServe InferenceService. Plain objects in, YAML out; nothing here talks to a cluster.
import {mkdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {parse as parseYaml, stringify} from 'yaml'
import {resolvePath, type LoadedConfig} from '../config/load.js'
import type {KubernetesConfig} from '../config/deploy-schema.js'
import {SERVE} from '../metric-names.js'
import {UserError} from '../errors.js'

/** Where the container finds what the manifests mount. */
export const POD_PATHS = {
  config: '/etc/ml/ml.yaml',
  configDir: '/etc/ml',
  tlsDir: '/etc/ml-tls',
} as const

/** The port `ml serve` listens on inside the pod (the image EXPOSEs it; Vertex AI uses it too). */
export const CONTAINER_PORT = 8080
/** The gRPC port inside the pod when serve.grpc is set (KServe's convention for gRPC predictors). */
export const GRPC_CONTAINER_PORT = 8081

export type Manifest = {apiVersion: string; kind: string; metadata: {name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string>}; [key: string]: unknown}

export interface KubernetesPlan {
  name: string
  namespace: string
  image: string
  repository: string
  /** The objects, in the order `kubectl apply` should see them. */
  manifests: Manifest[]
}

export interface KubernetesOptions {
  /** Overrides deploy.image. */
  image?: string
  /** Overrides deploy.kubernetes.namespace. */
  namespace?: string
  /** Write the KServe InferenceService even without deploy.kubernetes.kserve. */
  kserve?: boolean
}

/**
 * The repository as a pod sees it: deploy.repository, else export.dir when it is on gs:// or s3:// (a
 * pod cannot read the disk of the machine that ran `ml export`).
 */
export function podRepository(loaded: LoadedConfig): string {
  const {deploy, export: exportConfig} = loaded.config
  if (deploy.repository) {
    if (/^[a-z0-9]+:\/\//.test(deploy.repository) || deploy.repository.startsWith('/')) return deploy.repository
    throw new UserError(`deploy.repository "${deploy.repository}" is neither a bucket URI nor an absolute path inside the image`, {
      code: 'DEPLOY_INVALID',
      exit: 'usage',
      suggestions: ['Use a gs:// prefix the pods can read, or the absolute path where the image holds the models (e.g. /opt/ml/models).'],
    })
  }
  const dir = resolvePath(loaded, exportConfig.dir)
  if (/^(gs|s3):\/\//.test(dir)) return dir
  throw new UserError(`export.dir ${dir} is on this machine's disk, which the pods cannot read`, {
    code: 'DEPLOY_NO_REPOSITORY',
    exit: 'usage',
    suggestions: [
      'Export to a bucket the cluster can read (export.dir: gs://<bucket>/models, then `ml export`), or',
      'bake the models into the image and set deploy.repository to their path inside it (e.g. /opt/ml/models).',
    ],
  })
}

/** The ml.yaml mounted into the pods: the model's name, image limits, engine and serve settings as deployed. */
export function podConfig(loaded: LoadedConfig, repository: string): Record<string, unknown> {
  const {config} = loaded
  const serve: Record<string, unknown> = {
    ...config.serve,
    host: '0.0.0.0',
    port: CONTAINER_PORT,
    repository,
    models: config.serve.models ?? [config.name],
    shutdownDelayMs: config.deploy.shutdownDelayMs,
    // Logs go to the pod's stdout/stderr, where the cluster's log collector reads them.
    accessLog: config.serve.accessLog === 'off' ? 'off' : 'stdout',
  }
  if (config.serve.tls) serve.tls = {cert: `${POD_PATHS.tlsDir}/tls.crt`, key: `${POD_PATHS.tlsDir}/tls.key`}
  if (config.serve.grpc) serve.grpc = {port: GRPC_CONTAINER_PORT}
  return {
    name: config.name,
    // The server reads only the image spec and limits from data; the sources stay where ingest runs.
    data: {
      sources: [{type: 'folder', path: POD_PATHS.configDir}],
      image: config.data.image,
      maxPixels: config.data.maxPixels,
      maxFileBytes: config.data.maxFileBytes,
    },
    train: {backend: config.train.backend},
    serve,
  }
}

function seconds(ms: number): number {
  return Math.ceil(ms / 1000)
}

/** Builds every manifest for the config's model. Throws UserError when the config cannot be deployed. */
export async function kubernetesPlan(loaded: LoadedConfig, options: KubernetesOptions = {}): Promise<KubernetesPlan> {
  const {config} = loaded
  const k8s: KubernetesConfig = config.deploy.kubernetes
  const image = options.image ?? config.deploy.image
  if (!image) {
    throw new UserError('no container image: the pods need the ml image', {
      code: 'DEPLOY_NO_IMAGE',
      exit: 'usage',
      suggestions: ['Build and push configs/docker/Dockerfile, then set deploy.image (or pass --image).'],
    })
  }
  const name = config.name.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 52) || 'model'
  const namespace = options.namespace ?? k8s.namespace
  const repository = podRepository(loaded)
  const labels = {'app.kubernetes.io/name': 'ml-serve', 'app.kubernetes.io/instance': name, 'app.kubernetes.io/component': 'inference'}
  const meta = (suffix = '', extra: Record<string, string> = {}) => ({name: `${name}${suffix}`, namespace, labels: {...labels, ...extra}})
  const scheme = config.serve.tls ? 'HTTPS' : 'HTTP'
  const tokenSecret = k8s.tokenSecret ?? `${name}-token`
  const tlsSecret = k8s.tlsSecret ?? `${name}-tls`
  const tokenEnv = config.serve.auth?.tokenEnv

  const podConfigYaml = stringify(podConfig(loaded, repository))
  const configMap: Manifest = {apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('-config'), data: {'ml.yaml': podConfigYaml}}

  const resources: Record<string, Record<string, string | number>> = {
    requests: {cpu: k8s.cpu, memory: k8s.memory},
    limits: {cpu: k8s.cpu, memory: k8s.memory},
  }
  if (k8s.gpus > 0) {
    resources.requests!['nvidia.com/gpu'] = k8s.gpus
    resources.limits!['nvidia.com/gpu'] = k8s.gpus
  }
  const env: Array<Record<string, unknown>> = []
  if (tokenEnv) env.push({name: tokenEnv, valueFrom: {secretKeyRef: {name: tokenSecret, key: 'token'}}})
  const volumeMounts: Array<Record<string, unknown>> = [{name: 'config', mountPath: POD_PATHS.configDir, readOnly: true}]
  const volumes: Array<Record<string, unknown>> = [{name: 'config', configMap: {name: `${name}-config`}}]
  if (config.serve.tls) {
    volumeMounts.push({name: 'tls', mountPath: POD_PATHS.tlsDir, readOnly: true})
    volumes.push({name: 'tls', secret: {secretName: tlsSecret}})
  }
  const probe = (path: string, periodSeconds: number, failureThreshold: number) => ({
    httpGet: {path, port: 'http', scheme},
    periodSeconds,
    timeoutSeconds: 2,
    failureThreshold,
  })
  const container = {
    name: 'ml-serve',
    image,
    args: ['serve', '--config', POD_PATHS.config],
    ports: [
      {name: 'http', containerPort: CONTAINER_PORT, protocol: 'TCP'},
      ...(config.serve.grpc ? [{name: 'grpc', containerPort: GRPC_CONTAINER_PORT, protocol: 'TCP'}] : []),
    ],
    env,
    resources,
    volumeMounts,
    // Loading and warming up the models can take a while on a cold node: liveness waits for start-up.
    startupProbe: probe('/v2/health/live', 2, 60),
    readinessProbe: probe('/v2/health/ready', 2, 2),
    livenessProbe: probe('/v2/health/live', 10, 3),
    securityContext: {allowPrivilegeEscalation: false, runAsNonRoot: true, runAsUser: 1000},
  }
  // After SIGTERM the server answers (not ready) for shutdownDelayMs, then drains requests that may wait up
  // to requestTimeoutMs: the grace period must outlast both, or the kubelet kills requests mid-answer.
  const grace = seconds(config.deploy.shutdownDelayMs + config.serve.requestTimeoutMs) + 5
  const podTemplate = {
    metadata: {labels, annotations: {'prometheus.io/scrape': 'true', 'prometheus.io/port': String(CONTAINER_PORT), 'prometheus.io/path': '/metrics'}},
    spec: {
      ...(k8s.serviceAccount ? {serviceAccountName: k8s.serviceAccount} : {}),
      terminationGracePeriodSeconds: grace,
      containers: [container],
      volumes,
    },
  }
  const deployment: Manifest = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(),
    spec: {
      replicas: k8s.minReplicas,
      selector: {matchLabels: labels},
      strategy: {type: 'RollingUpdate', rollingUpdate: {maxUnavailable: 0, maxSurge: 1}},
      template: podTemplate,
    },
  }
  const service: Manifest = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(),
    spec: {
      selector: labels,
      ports: [
        {name: 'http', port: config.serve.tls ? 443 : 80, targetPort: 'http', protocol: 'TCP'},
        // gRPC keeps its port number in the Service, as clients (tritonclient, TF Serving's) expect it.
        // appProtocol tells meshes and gateways it is HTTP/2 (h2c in clear text; TLS is negotiated otherwise).
        ...(config.serve.grpc
          ? [{name: 'grpc', port: GRPC_CONTAINER_PORT, targetPort: 'grpc', protocol: 'TCP', ...(config.serve.tls ? {} : {appProtocol: 'kubernetes.io/h2c'})}]
          : []),
      ],
    },
  }
  const hpa: Manifest = {
    apiVersion: 'autoscaling/v2',
    kind: 'HorizontalPodAutoscaler',
    metadata: meta(),
    spec: {
      scaleTargetRef: {apiVersion: 'apps/v1', kind: 'Deployment', name},
      minReplicas: k8s.minReplicas,
      maxReplicas: k8s.maxReplicas,
      metrics: [
        {type: 'Resource', resource: {name: 'cpu', target: {type: 'Utilization', averageUtilization: k8s.targetCpuUtilization}}},
        // Served to the HPA by prometheus-adapter (or KEDA) from the pods' own /metrics.
        {type: 'Pods', pods: {metric: {name: SERVE.queueDepth}, target: {type: 'AverageValue', averageValue: String(k8s.targetQueueDepth)}}},
      ],
      behavior: {scaleDown: {stabilizationWindowSeconds: 300}},
    },
  }
  const pdb: Manifest = {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(),
    spec: {maxUnavailable: 1, selector: {matchLabels: labels}},
  }
  const endpoint: Record<string, unknown> = {port: 'http', path: '/metrics', interval: '15s', scheme: scheme.toLowerCase()}
  if (tokenEnv) endpoint.authorization = {type: 'Bearer', credentials: {name: tokenSecret, key: 'token'}}
  if (config.serve.tls) endpoint.tlsConfig = {insecureSkipVerify: false, serverName: `${name}.${namespace}.svc`}
  const serviceMonitor: Manifest = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'ServiceMonitor',
    metadata: meta(),
    spec: {selector: {matchLabels: labels}, namespaceSelector: {matchNames: [namespace]}, endpoints: [endpoint]},
  }
  const prometheusRule: Manifest = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: meta(),
    spec: {groups: await alertRuleGroups()},
  }
  const manifests = [configMap, deployment, service, hpa, pdb, serviceMonitor, prometheusRule]
  if (options.kserve || k8s.kserve) manifests.push(inferenceService(name, namespace, labels, container, podTemplate.spec, k8s))
  return {name, namespace, image, repository, manifests}
}

/**
 * A KServe InferenceService running the same container (custom predictor speaking the V2 protocol) in
 * RawDeployment mode with KServe's HPA on CPU: KServe's spec has no field for a custom metric, so the
 * queue-depth scaling of the plain Deployment is not available here.
 */
function inferenceService(
  name: string,
  namespace: string,
  labels: Record<string, string>,
  container: Record<string, unknown>,
  podSpec: Record<string, unknown>,
  k8s: KubernetesConfig,
): Manifest {
  // KServe routes to the container named kserve-container and probes it itself. A KServe predictor
  // exposes one port (HTTP here): gRPC stays on the plain Deployment's Service.
  const {startupProbe, livenessProbe, ports, ...rest} = container as Record<string, unknown> & {ports: Array<{name: string}>}
  void startupProbe
  void livenessProbe
  rest.ports = ports.filter((p) => p.name === 'http')
  return {
    apiVersion: 'serving.kserve.io/v1beta1',
    kind: 'InferenceService',
    metadata: {
      name,
      namespace,
      labels,
      annotations: {
        'serving.kserve.io/deploymentMode': 'RawDeployment',
        'serving.kserve.io/autoscalerClass': 'hpa',
        'serving.kserve.io/metric': 'cpu',
        'serving.kserve.io/targetUtilizationPercentage': String(k8s.targetCpuUtilization),
      },
    },
    spec: {
      predictor: {
        minReplicas: k8s.minReplicas,
        maxReplicas: k8s.maxReplicas,
        ...(k8s.kserve?.canaryTrafficPercent !== undefined ? {canaryTrafficPercent: k8s.kserve.canaryTrafficPercent} : {}),
        ...(podSpec.serviceAccountName ? {serviceAccountName: podSpec.serviceAccountName} : {}),
        terminationGracePeriodSeconds: podSpec.terminationGracePeriodSeconds,
        containers: [{...rest, name: 'kserve-container'}],
        volumes: podSpec.volumes,
      },
    },
  }
}

/** The alert rules shipped in configs/monitoring/rules.yml, as PrometheusRule groups. */
async function alertRuleGroups(): Promise<unknown[]> {
  const file = fileURLToPath(new URL('../../../../configs/monitoring/rules.yml', import.meta.url))
  const rules = parseYaml(await readFile(file, 'utf8')) as {groups?: unknown[]}
  if (!Array.isArray(rules.groups)) throw new Error(`${file} holds no rule groups`)
  return rules.groups
}

/** Multi-document YAML, for `kubectl apply -f -`. */
export function manifestsYaml(manifests: Manifest[]): string {
  return manifests.map((m) => stringify(m, {lineWidth: 0})).join('---\n')
}

/** File name of a manifest in --out: ordered, kind and name, e.g. 02-deployment-digits.yaml. */
export function manifestFileName(manifest: Manifest, index: number): string {
  return `${String(index + 1).padStart(2, '0')}-${manifest.kind.toLowerCase()}-${manifest.metadata.name}.yaml`
}

export interface KubernetesResult {
  name: string
  namespace: string
  image: string
  repository: string
  objects: Array<{kind: string; name: string; file?: string}>
  /** The folder written with --out. */
  out?: string
}

/**
 * `ml deploy kubernetes`: builds the plan and writes one file per object into `out`, or returns the
 * multi-document YAML for stdout.
 */
export async function deployKubernetes(loaded: LoadedConfig, options: KubernetesOptions & {out?: string}): Promise<{result: KubernetesResult; yaml?: string}> {
  const plan = await kubernetesPlan(loaded, options)
  const objects = plan.manifests.map((m, i) => ({kind: m.kind, name: m.metadata.name, ...(options.out ? {file: manifestFileName(m, i)} : {})}))
  const result: KubernetesResult = {name: plan.name, namespace: plan.namespace, image: plan.image, repository: plan.repository, objects}
  if (!options.out) return {result, yaml: manifestsYaml(plan.manifests)}
  try {
    await mkdir(options.out, {recursive: true})
    for (const [i, m] of plan.manifests.entries()) await writeFile(path.join(options.out, objects[i]!.file!), stringify(m, {lineWidth: 0}))
  } catch (error) {
    throw new UserError(`cannot write the manifests into ${options.out}: ${(error as Error).message}`, {code: 'DEPLOY_OUT_UNWRITABLE', exit: 'usage', cause: error})
  }
  return {result: {...result, out: options.out}}
}
