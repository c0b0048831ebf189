// `ml train cancel <job>`: asks Vertex AI to stop a training (or tuning) job; a running job goes to
// CANCELLING and then CANCELLED, keeping whatever it already wrote to its output prefix.
import {Args} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class TrainCancel extends MlCommand {
  static override summary = 'Cancel a Vertex AI training or tuning job, or stop a SageMaker training or tuning job (by its name or ARN).'
  static override description = `Sends a cancel request for the job and shows its state afterwards (usually JOB_STATE_CANCELLING, then CANCELLED within a minute). Checkpoints already written under the job's output prefix stay. A job that already ended is an error (exit 2). A job id alone is looked up in train.vertex's project and region.

${MlCommand.exitCodesHelp}`

  static override examples = ['<%= config.bin %> train cancel projects/my-project/locations/us-central1/customJobs/1234567890']

  static override args = {
    job: Args.string({description: 'Job name or id.', required: true}),
  }

  async run() {
    const {args, flags} = await this.parse(TrainCancel)
    const sagemaker = await import('../../lib/train/sagemaker.js')
    if (sagemaker.isSageMakerJobRef(args.job)) {
      const view = sagemaker.isTuningJobArn(args.job) ? undefined : await sagemaker.stopJob(args.job).catch((error: unknown) => {
        if ((error as {code?: string}).code === 'SAGEMAKER_JOB_NOT_FOUND') return undefined
        throw error
      })
      if (view) {
        this.say(`stop requested for ${view.name}: ${view.state}`)
        return view
      }
      // Not a training job: a tuning job (stopping it stops its running trials).
      const {tuningJobStatus} = await import('../../lib/train/sagemaker-tune.js')
      const tuning = await tuningJobStatus(args.job.replace(/^arn:.*:hyper-parameter-tuning-job\//, ''), {stop: true})
      this.say(`stop requested for tuning job ${tuning.name}: ${tuning.state}`)
      return {kind: 'sagemaker-tuning-job', ...tuning}
    }
    const {cancelJob, resolveJobName} = await import('../../lib/train/vertex.js')
    const {optionalVertexLocation} = await import('../../lib/cloud/vertex-client.js')
    const name = resolveJobName(args.job, 'customJobs', await optionalVertexLocation(flags.config, args.job))
    const view = await cancelJob(name)
    this.say(`cancel requested for ${view.name}: ${view.state}`)
    return view
  }
}
