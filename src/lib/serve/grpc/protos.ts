// The .proto files the gRPC port speaks, shipped in the package's protos/ folder: the KServe V2 / Open
// Inference Protocol service (protos/grpc_service.proto, package inference) and TF Serving's
// PredictionService (protos/tensorflow_serving/apis/, with the TensorFlow messages it uses). Loaded
// with @grpc/proto-loader, as clients built from the published protos load them.
import {fileURLToPath} from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'

/** The protos/ folder at the package root (this file runs from dist/src/lib/serve/grpc/). */
export const PROTOS_DIR = fileURLToPath(new URL('../../../../../protos/', import.meta.url))

export const KSERVE_PROTO = 'grpc_service.proto'
export const TFSERVING_PROTO = 'tensorflow_serving/apis/prediction_service.proto'

/**
 * Field names as in the .proto files (snake_case), int64 as numbers (shapes, versions), enums as their
 * names (DT_FLOAT), a oneof's chosen field named in the oneof's own field, and defaults filled in.
 */
export const LOADER_OPTIONS: protoLoader.Options = {keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTOS_DIR]}

export interface LoadedServices {
  kserve: grpc.ServiceDefinition
  tfserving: grpc.ServiceDefinition
}

let loaded: LoadedServices | undefined

/** Both services' definitions (parsed once per process). */
export function services(): LoadedServices {
  if (loaded === undefined) {
    const definition = protoLoader.loadSync([KSERVE_PROTO, TFSERVING_PROTO], LOADER_OPTIONS)
    loaded = {
      kserve: definition['inference.GRPCInferenceService'] as grpc.ServiceDefinition,
      tfserving: definition['tensorflow.serving.PredictionService'] as grpc.ServiceDefinition,
    }
  }
  return loaded
}
