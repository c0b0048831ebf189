// `ml train status <job>`: where a Vertex AI training (or tuning) job stands: state, times, error,
// outputs, and for a finished training job the run it wrote.
import {Args} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'
import {fmt} from '../../lib/ui/progress.js'

export default class TrainStatus extends MlCommand {
  static override summary = 'Show the state of a Vertex AI training or tuning job, or of a SageMaker training or tuning job.'
  static override description = `Reads the job from Vertex AI: its state, when it was created, started and ended, the error of a failed job and its output prefix. For a succeeded training job it also reads the run the job wrote (final metrics). A job id alone is looked up in train.vertex's project and region; a full name (projects/<project>/locations/<region>/customJobs/<id>, or .../hyperparameterTuningJobs/<id>) needs no config.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> train status projects/my-project/locations/us-central1/customJobs/1234567890',
    '<%= config.bin %> train status 1234567890 --json',
    '<%= config.bin %> train status digits-20261203-101500-ab12 --json',
  ]

  static override args = {
    job: Args.string({description: 'Job name or id.', required: true}),
  }

  async run() {
    const {args, flags} = await this.parse(TrainStatus)
    const sagemaker = await import('../../lib/train/sagemaker.js')
    if (sagemaker.isSageMakerJobRef(args.job)) {
      const view = sagemaker.isTuningJobArn(args.job) ? undefined : await sagemaker.describeJob(args.job).catch((error: unknown) => {
        if ((error as {code?: string}).code === 'SAGEMAKER_JOB_NOT_FOUND') return undefined
        throw error
      })
      if (!view) return this.tuningStatus(args.job)
      const run = view.state === 'Completed' && view.outputDir ? await sagemaker.jobRunOf(view.outputDir) : undefined
      this.say(`${view.name}: ${view.state}${view.secondaryState && view.secondaryState !== view.state ? ` (${view.secondaryState})` : ''}`)
      for (const [label, value] of [
        ['created', view.createTime],
        ['started', view.startTime],
        ['ended', view.endTime],
        ['failure', view.failureReason],
        ['outputs', view.outputDir],
        ['model', view.modelArtifacts],
      ] as const) {
        if (value) this.say(`  ${label.padEnd(8)} ${value}`)
      }
      if (run) this.say(`  run      ${run.runId} (${run.status}), val_acc ${fmt(run.final?.valAccuracy)}, ${run.runDir}`)
      return {...view, ...(run ? {run} : {})}
    }
    const {jobRun, getJob, resolveJobName} = await import('../../lib/train/vertex.js')
    const {optionalVertexLocation} = await import('../../lib/cloud/vertex-client.js')
    const name = resolveJobName(args.job, 'customJobs', await optionalVertexLocation(flags.config, args.job))
    const {raw: _raw, ...view} = await getJob(name)
    const run = view.state === 'JOB_STATE_SUCCEEDED' && view.outputDir ? await jobRun(view.outputDir).catch(() => undefined) : undefined
    this.say(`${view.name} (${view.displayName}): ${view.state}`)
    for (const [label, value] of [
      ['created', view.createTime],
      ['started', view.startTime],
      ['ended', view.endTime],
      ['error', view.error],
      ['outputs', view.outputDir],
    ] as const) {
      if (value) this.say(`  ${label.padEnd(8)} ${value}`)
    }
    if (run) this.say(`  run      ${run.runId} (${run.status}), val_acc ${fmt(run.final?.valAccuracy)}, ${run.runDir}`)
    return {...view, ...(run ? {run} : {})}
  }

  /** A SageMaker tuning job: its state, failure, trial counts and best trial. */
  private async tuningStatus(ref: string) {
    const {tuningJobStatus} = await import('../../lib/train/sagemaker-tune.js')
    const view = await tuningJobStatus(ref.replace(/^arn:.*:hyper-parameter-tuning-job\//, ''))
    this.say(`${view.name}: ${view.state}`)
    if (view.failureReason) this.say(`  failure  ${view.failureReason}`)
    if (view.counters) this.say(`  trials   ${Object.entries(view.counters).map(([k, v]) => `${k} ${v ?? 0}`).join(', ')}`)
    if (view.best) this.say(`  best     ${view.best}`)
    return {kind: 'sagemaker-tuning-job', ...view}
  }
}
