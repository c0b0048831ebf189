import {Flags} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class DeployKubernetes extends MlCommand {
  static override summary = 'Write Kubernetes manifests that run `ml serve` for the config\'s model repository.'
  static override description = `Writes the objects a cluster needs to serve the model: a ConfigMap with the server's ml.yaml (serve.* as configured, listening on 0.0.0.0:8080, serve.shutdownDelayMs from deploy.shutdownDelayMs), a Deployment (readiness /v2/health/ready, liveness /v2/health/live, a termination grace period longer than the shutdown delay plus serve.requestTimeoutMs, resources, the bearer token from a Secret when serve.auth is set, the TLS Secret mounted when serve.tls is set), a Service, an autoscaling/v2 HorizontalPodAutoscaler on CPU and on ml_serve_queue_depth per pod (served to the HPA by prometheus-adapter), a PodDisruptionBudget, a ServiceMonitor and a PrometheusRule with the alert rules of configs/monitoring/rules.yml (prometheus-operator), and with --kserve (or deploy.kubernetes.kserve) a KServe InferenceService in RawDeployment mode.

The model repository must be readable from the pods: deploy.repository, or export.dir when it is a gs:// prefix, or an absolute path inside an image that holds the models. Nothing is sent to a cluster: pipe the output to \`kubectl apply -f -\` or write files with --out.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> deploy kubernetes --image us-docker.pkg.dev/my-project/ml/ml:0.1.0 | kubectl apply -f -',
    '<%= config.bin %> deploy kubernetes --out k8s/ --namespace models',
    '<%= config.bin %> deploy kubernetes --kserve --json',
  ]

  static override flags = {
    image: Flags.string({summary: 'Container image (overrides deploy.image).', env: 'ML_DEPLOY_IMAGE'}),
    namespace: Flags.string({summary: 'Namespace (overrides deploy.kubernetes.namespace).'}),
    out: Flags.string({summary: 'Write one YAML file per object into this folder instead of printing them.'}),
    kserve: Flags.boolean({summary: 'Also write a KServe InferenceService.'}),
  }

  async run() {
    const {flags} = await this.parse(DeployKubernetes)
    const overrides: Record<string, unknown> = {}
    if (flags.namespace !== undefined) overrides['deploy.kubernetes.namespace'] = flags.namespace
    const loaded = await this.loadConfig(flags.config, overrides)
    const {deployKubernetes} = await import('../../lib/deploy/kubernetes.js')
    const {result, yaml} = await deployKubernetes(loaded, {image: flags.image, kserve: flags.kserve, out: flags.out})
    if (yaml !== undefined && !this.jsonEnabled()) process.stdout.write(yaml)
    if (result.out) {
      for (const o of result.objects) this.say(`${o.file}  ${o.kind} ${o.name}`)
      this.say(`wrote ${result.objects.length} manifests for ${result.name} (namespace ${result.namespace}) into ${result.out}: kubectl apply -f ${result.out}`)
    }
    return yaml !== undefined && this.jsonEnabled() ? {...result, yaml} : result
  }
}
