// `ml export --to vertex`: registers an exported version in the Vertex AI Model Registry; the version
// folder on gs:// is the artifact and the ml image serves it with `ml serve`'s KServe V2 endpoints.
import type {LoadedConfig} from '../config/load.js'
import {modelServiceClient, parentOf, vertexCall, type ModelServiceClient} from '../cloud/vertex-client.js'
import {isCloudStorage, parentOf as folderOf} from '../storage/index.js'
import {vertexSettings} from '../train/vertex.js'
import {UserError} from '../errors.js'

/** The port `ml serve` listens on in the container; Vertex AI sends predictions and health checks there. */
export const SERVING_PORT = 8080

export interface ExportedVersion {
  name: string
  version: number
  /** The version folder: <export.dir>/<name>/<version>. */
  dir: string
}

export interface VertexModelResult {
  /** projects/<project>/locations/<region>/models/<id> */
  model: string
  modelVersionId?: string
  operation: string
  artifactUri: string
  imageUri: string
  predictRoute: string
  healthRoute: string
}

/**
 * The serving container: `ml serve` on the model repository (the parent of the model folder), this
 * model only, on all interfaces and on the port Vertex AI names in AIP_HTTP_PORT. Vertex AI's predict
 * API takes {"instances": [...]} and expects {"predictions": [...]} back: TF Serving's row format, so
 * predictions go to the TF Serving predict endpoint of exactly this version, and health checks to the
 * V2 ready endpoint.
 */
export function servingContainer(exported: ExportedVersion, imageUri: string): Record<string, unknown> {
  const repository = folderOf(folderOf(exported.dir))
  return {
    imageUri,
    args: ['serve', '--repository', repository, '--model', exported.name, '--host', '0.0.0.0'],
    ports: [{containerPort: SERVING_PORT}],
    predictRoute: `/v1/models/${exported.name}/versions/${exported.version}:predict`,
    healthRoute: '/v2/health/ready',
  }
}

/** Uploads the model (a long-running operation, waited for) and returns the registry's resource name. */
export async function uploadToVertex(
  loaded: LoadedConfig,
  exported: ExportedVersion,
  options: {client?: ModelServiceClient; onProgress?: (message: string) => void} = {},
): Promise<VertexModelResult> {
  const vertex = vertexSettings(loaded.config, '`ml export --to vertex`')
  if (!isCloudStorage(exported.dir)) {
    throw new UserError(`--to vertex needs the export on Cloud Storage, but version ${exported.version} is in ${exported.dir}`, {
      code: 'VERTEX_LOCAL_EXPORT',
      exit: 'usage',
      suggestions: ['Set export.dir (or --dir) to a gs://bucket/path and export again.'],
    })
  }
  const containerSpec = servingContainer(exported, vertex.image)
  const models = options.client ?? (await modelServiceClient(vertex.region))
  try {
    options.onProgress?.(`registering ${exported.dir} in the Vertex AI Model Registry (${parentOf(vertex)})`)
    const [operation] = await vertexCall('upload the model', () =>
      models.uploadModel({
        parent: parentOf(vertex),
        model: {
          displayName: exported.name,
          description: `${exported.name} version ${exported.version}, exported by ml`,
          artifactUri: exported.dir,
          containerSpec,
          labels: {'ml-tool': 'ml', 'ml-version': String(exported.version)},
        },
      }),
    )
    const [response] = await vertexCall('upload the model', () => operation.promise())
    if (!response?.model) throw new UserError(`Vertex AI finished ${operation.name} without a model name`, {code: 'VERTEX_UNAVAILABLE', exit: 'service'})
    return {
      model: response.model,
      ...(response.modelVersionId ? {modelVersionId: response.modelVersionId} : {}),
      operation: operation.name ?? '',
      artifactUri: exported.dir,
      imageUri: vertex.image,
      predictRoute: containerSpec.predictRoute as string,
      healthRoute: containerSpec.healthRoute as string,
    }
  } finally {
    if (!options.client) await models.close()
  }
}
