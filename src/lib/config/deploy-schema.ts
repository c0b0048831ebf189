// The deploy.* part of ml.yaml: where `ml deploy` puts the server (Kubernetes, KServe, a load balancer in
// front of several `ml serve` processes). Kept apart from schema.ts like the cloud keys.
import {z} from 'zod'

const positiveInt = z
  .number({error: 'expected a positive integer'})
  .int({error: 'expected a positive integer'})
  .positive({error: 'expected a positive integer'})

// Kubernetes object names and namespaces (RFC 1123 labels).
const dnsLabel = z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a lowercase RFC 1123 name: letters, digits and "-"').max(63)
// Kubernetes resource quantities: 500m, 2, 1.5, 512Mi, 2Gi.
const quantity = z.union([z.number().positive(), z.string().regex(/^\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$/, 'expected a Kubernetes quantity such as 500m, 2, 512Mi or 2Gi')])

export const KubernetesSchema = z
  .strictObject({
    namespace: dnsLabel.default('default').describe('Namespace of every object.'),
    minReplicas: positiveInt.max(1000).default(2).describe('Fewest server pods (the HorizontalPodAutoscaler never goes below; 2 keeps serving through a node drain).'),
    maxReplicas: positiveInt.max(1000).default(10).describe('Most server pods the HorizontalPodAutoscaler may run.'),
    cpu: quantity.default('2').describe('CPU requested (and limited to) per pod, e.g. 2 or 1500m; serve.instances auto uses this many threads.'),
    memory: quantity.default('2Gi').describe('Memory requested (and limited to) per pod, e.g. 2Gi.'),
    gpus: z.number().int().min(0).max(16).default(0).describe('nvidia.com/gpu per pod (the image runs tfjs-node-gpu).'),
    targetCpuUtilization: z.number().int().min(1).max(100).default(70).describe('HPA: average CPU utilisation (percent of the request) to scale at.'),
    targetQueueDepth: z
      .number()
      .positive()
      .default(16)
      .describe('HPA: average queued images per pod (ml_serve_queue_depth, served to the HPA by prometheus-adapter) to scale at.'),
    serviceAccount: dnsLabel.optional().describe('Kubernetes service account of the pods (e.g. one bound to a Google service account by Workload Identity, to read a gs:// repository).'),
    tokenSecret: dnsLabel
      .optional()
      .describe('With serve.auth: the Secret holding the bearer token under the key `token` (default <name>-token; create it with kubectl create secret generic).'),
    tlsSecret: dnsLabel.optional().describe('With serve.tls: the kubernetes.io/tls Secret mounted as the certificate and key (default <name>-tls).'),
    kserve: z
      .strictObject({
        canaryTrafficPercent: z.number().int().min(0).max(100).optional().describe('Share of traffic the newest revision gets (KServe canary rollout).'),
      })
      .optional()
      .describe('Also write a KServe InferenceService (RawDeployment, HPA on CPU) serving the V2 protocol with the same container.'),
  })
  .refine((k) => k.minReplicas <= k.maxReplicas, {message: 'minReplicas must not exceed maxReplicas', path: ['minReplicas']})
  .describe('`ml deploy kubernetes`: the manifests written for a cluster.')

export const NginxSchema = z
  .strictObject({
    upstreams: z
      .array(z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$|^unix:\/.+$/, 'expected host:port or unix:/path'))
      .default([])
      .describe('The `ml serve` instances behind the load balancer: host:port or unix:/path. Flag --upstream (repeatable).'),
    listen: z
      .union([z.number().int().min(1).max(65_535), z.string().min(1)])
      .default(8080)
      .describe('What nginx listens on: a port, host:port, or unix:/path. Flag --listen.'),
    failTimeoutSeconds: z.number().int().min(1).max(3600).default(5).describe('A server that refused a connection gets no requests for this long (passive health check).'),
  })
  .describe('`ml deploy nginx`: an nginx load balancer in front of several `ml serve` instances.')

export const VertexEndpointSchema = z
  .strictObject({
    endpoint: z
      .string()
      .min(1)
      .max(128)
      .optional()
      .describe('Display name of the Vertex AI Endpoint to deploy to (created when missing; default <name>-endpoint).'),
    machineType: z.string().min(1).default('n1-standard-4').describe('Machine type of each serving replica, e.g. n1-standard-4.'),
    acceleratorType: z
      .string()
      .regex(/^[A-Z][A-Z0-9_]+$/, 'expected an accelerator type such as NVIDIA_TESLA_T4')
      .optional()
      .describe('e.g. NVIDIA_TESLA_T4; omit for CPU only.'),
    acceleratorCount: positiveInt.max(8).optional().describe('GPUs per replica (default 1 with acceleratorType).'),
    minReplicas: positiveInt.max(1000).default(1).describe('Fewest replicas (dedicatedResources.minReplicaCount).'),
    maxReplicas: positiveInt.max(1000).default(3).describe('Most replicas Vertex AI scales to.'),
    targetCpuUtilization: z.number().int().min(1).max(100).default(60).describe('CPU utilisation (percent) Vertex AI scales at.'),
  })
  .refine((v) => v.minReplicas <= v.maxReplicas, {message: 'minReplicas must not exceed maxReplicas', path: ['minReplicas']})
  .describe('`ml deploy vertex`: the Vertex AI Endpoint and the resources of the deployed model (project and region from train.vertex).')

export const DeploySchema = z
  .strictObject({
    image: z.string().min(1).optional().describe('The ml container image the servers run (configs/docker/Dockerfile), e.g. us-docker.pkg.dev/<project>/ml/ml:0.1.0. Flag --image.'),
    repository: z
      .string()
      .min(1)
      .optional()
      .describe('The model repository as the servers see it: a gs:// prefix (default export.dir when it is on gs://), or an absolute path inside the image when the models are baked in.'),
    shutdownDelayMs: z
      .number()
      .int()
      .min(0)
      .max(600_000)
      .default(5000)
      .describe('serve.shutdownDelayMs of deployed servers: how long a pod keeps serving, not ready, after SIGTERM while endpoints are updated.'),
    kubernetes: KubernetesSchema.prefault({}),
    nginx: NginxSchema.prefault({}),
    vertex: VertexEndpointSchema.prefault({}),
  })
  .describe('`ml deploy`: taking the server to Kubernetes, KServe or behind a load balancer.')

export type DeployConfig = z.output<typeof DeploySchema>
export type KubernetesConfig = z.output<typeof KubernetesSchema>
export type NginxConfig = z.output<typeof NginxSchema>
export type VertexEndpointConfig = z.output<typeof VertexEndpointSchema>
