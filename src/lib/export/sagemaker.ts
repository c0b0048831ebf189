// `ml export --to sagemaker`: packs an exported version as SageMaker's model.tar.gz (a model
// repository <name>/<version>/..., which SageMaker unpacks into /opt/ml/model), uploads it under
// train.sagemaker.outputPath, and creates a SageMaker Model whose container is the ml image. SageMaker
// starts that image with the argument `serve`: `ml serve` reads the repository from ML_REPOSITORY and
// listens on 0.0.0.0:8080, where it answers SageMaker's GET /ping and POST /invocations.
import {randomBytes} from 'node:crypto'
import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type {LoadedConfig} from '../config/load.js'
import {UserError} from '../errors.js'
import {downloadDir, joinPath} from '../storage/index.js'
import {sagemakerClient, sagemakerError} from '../train/sagemaker.js'
import type {ExportedVersion} from './vertex.js'

export interface SageMakerModelResult {
  model: string
  modelArn?: string
  /** The s3:// URI of the model.tar.gz the Model serves. */
  modelData: string
}

/** The environment of the serving container: what `ml serve` needs, without flags (SageMaker passes only `serve`). */
export function servingEnvironment(exported: ExportedVersion): Record<string, string> {
  return {ML_REPOSITORY: '/opt/ml/model', ML_HOST: '0.0.0.0', ML_PORT: '8080', ML_SAGEMAKER_MODEL: exported.name}
}

export async function registerInSageMaker(loaded: LoadedConfig, exported: ExportedVersion, options: {onProgress?: (message: string) => void} = {}): Promise<SageMakerModelResult> {
  const settings = loaded.config.train.sagemaker
  if (!settings) {
    throw new UserError('`ml export --to sagemaker` needs train.sagemaker in the config (roleArn, image, outputPath)', {
      code: 'CONFIG_INVALID',
      exit: 'usage',
      suggestions: ['Add train.sagemaker: {roleArn: ..., image: <ECR image of ml>, outputPath: s3://my-bucket/ml}; see docs/aws.md.'],
    })
  }
  const tar = await import('tar')
  const work = await mkdtemp(path.join(os.tmpdir(), 'ml-sagemaker-model-'))
  try {
    // The archive holds a one-version repository, as `ml serve --repository /opt/ml/model` reads it.
    await downloadDir(exported.dir, path.join(work, 'repository', exported.name, String(exported.version)))
    const archive = path.join(work, 'model.tar.gz')
    await tar.create({gzip: true, file: archive, cwd: path.join(work, 'repository'), portable: true}, [exported.name])
    const modelData = joinPath(settings.outputPath, 'models', exported.name, String(exported.version), 'model.tar.gz')
    options.onProgress?.(`uploading ${modelData}`)
    const {createWriter} = await import('../storage/index.js')
    const {createReadStream} = await import('node:fs')
    const writer = await createWriter(modelData)
    try {
      for await (const chunk of createReadStream(archive)) await writer.write(chunk as Buffer)
      await writer.commit()
    } catch (error) {
      await writer.abort()
      throw error
    }
    const {client, check} = await sagemakerClient(settings.region)
    try {
      await check()
      const {CreateModelCommand} = await import('@aws-sdk/client-sagemaker')
      const model = `${exported.name}-v${exported.version}-${randomBytes(2).toString('hex')}`.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 63)
      options.onProgress?.(`creating SageMaker model ${model}`)
      const created = await client
        .send(
          new CreateModelCommand({
            ModelName: model,
            ExecutionRoleArn: settings.roleArn,
            PrimaryContainer: {Image: settings.image, ModelDataUrl: modelData, Environment: servingEnvironment(exported)},
            Tags: [{Key: 'ml-model', Value: exported.name}, {Key: 'ml-version', Value: String(exported.version)}],
          }),
        )
        .catch((error: unknown) => {
          throw sagemakerError(error, 'create the model')
        })
      return {model, ...(created.ModelArn ? {modelArn: created.ModelArn} : {}), modelData}
    } finally {
      client.destroy()
    }
  } finally {
    await rm(work, {recursive: true, force: true})
  }
}
