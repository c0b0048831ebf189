import {Flags} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class DeployVertex extends MlCommand {
  static override summary = 'Deploy a registered model to a Vertex AI Endpoint; shift canary traffic; roll back.'
  static override description = `Deploys a model registered by \`ml export --to vertex\` (--model, or the newest registered model named like the config) to the Vertex AI Endpoint named by deploy.vertex.endpoint (default <name>-endpoint; created when missing), with dedicated resources (deploy.vertex.machineType, accelerator, min/max replicas) autoscaled on CPU utilisation. The first model on an endpoint gets all its traffic; a later one gets --traffic percent (default 100) and the others keep the rest in proportion: a canary. Run again with --traffic for a model already deployed to move traffic only; --rollback moves all traffic back to the other deployed models and undeploys the newest; --status shows the endpoint. Project and region come from train.vertex.

Vertex AI sends predictions {"instances": [{"b64": "<image>"}]} to the model's predictRoute (TF Serving predict of \`ml serve\`, answering {"predictions": [...]}) and health checks to /v2/health/ready, on AIP_HTTP_PORT (8080).

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> deploy vertex --model projects/my-project/locations/us-central1/models/123',
    '<%= config.bin %> deploy vertex --traffic 10',
    '<%= config.bin %> deploy vertex --rollback',
    '<%= config.bin %> deploy vertex --status --json',
  ]

  static override flags = {
    model: Flags.string({summary: 'Model resource name (default: the newest registered model named like the config).'}),
    traffic: Flags.integer({summary: 'Percent of the endpoint\'s traffic for the model (canary).', min: 0, max: 100}),
    rollback: Flags.boolean({summary: 'Move traffic back to the previously deployed models and undeploy the newest.', exclusive: ['traffic', 'model', 'status']}),
    status: Flags.boolean({summary: 'Show the endpoint\'s deployed models and traffic split.', exclusive: ['traffic', 'model']}),
  }

  async run() {
    const {flags} = await this.parse(DeployVertex)
    const loaded = await this.loadConfig(flags.config)
    const {deployVertex} = await import('../../lib/deploy/vertex.js')
    const result = await deployVertex(loaded, {model: flags.model, traffic: flags.traffic, rollback: flags.rollback, status: flags.status, onProgress: (m) => this.note(m)})
    const verb = {deployed: `deployed model ${result.deployedModelId} to`, traffic: `moved traffic to deployed model ${result.deployedModelId} on`, 'rolled-back': `undeployed ${result.deployedModelId} from`, status: 'endpoint'}[result.action]
    this.say(`${verb} ${result.endpointDisplayName} (${result.endpoint})`)
    for (const d of result.deployedModels) this.say(`  ${String(d.trafficPercent).padStart(3)}%  ${d.id}  ${d.model}`)
    return result
  }
}
