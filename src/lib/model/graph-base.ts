// A frozen graph-model base as one layer of a layers model, so that a classifier trained on a graph
// base is still one TensorFlow.js layers model: saved, checkpointed, exported (tfjs) and run by
// predict, evaluate and serve like any other. The layer carries the graph (topology and weights,
// base64) in its config and runs it with GraphModel.execute; it has no weights of its own, so it
// never trains. ONNX cannot express it: export writes tfjs only for such a model, with a note.
import * as tf from '../engine/tf.js'

/** A graph model's artifacts as the layer's config keeps them (JSON-safe). */
export interface GraphSpec {
  modelTopology: object
  weightSpecs: tf.io.WeightsManifestEntry[]
  /** The weight file's bytes, base64. */
  weightData: string
  signature?: object
  modelInitializer?: object
}

/**
 * Saving a layers model snake_cases every string of a layer's config and loading camelCases it back
 * ("Conv2D" returns as "Conv2d"), so the graph, its weights and its node name travel as lowercase
 * hex, which both conversions leave as it is.
 */
interface SavedGraphConfig {
  graph: string
  weights: string
  output: string
  featureSize: number
  name?: string
}

const hex = (text: string) => Buffer.from(text, 'utf8').toString('hex')
const unhex = (text: string) => Buffer.from(text, 'hex').toString('utf8')

export interface GraphBaseArgs {
  graph: GraphSpec
  /** The node whose value is the features (`name` or `name:index`). */
  output: string
  /** Feature vector length (spatial outputs are averaged over height and width). */
  featureSize: number
  name?: string
}

export function graphSpec(artifacts: tf.io.ModelArtifacts): GraphSpec {
  const data = artifacts.weightData ? tf.io.concatenateArrayBuffers(artifacts.weightData as ArrayBuffer | ArrayBuffer[]) : new ArrayBuffer(0)
  // A deep copy: the caller's objects stay its own.
  return structuredClone({
    modelTopology: artifacts.modelTopology as object,
    weightSpecs: artifacts.weightSpecs ?? [],
    weightData: Buffer.from(data).toString('base64'),
    ...(artifacts.signature ? {signature: artifacts.signature} : {}),
    ...(artifacts.modelInitializer ? {modelInitializer: artifacts.modelInitializer} : {}),
  })
}

export class GraphBase extends tf.layers.Layer {
  static readonly className = 'MlGraphBase'
  private readonly spec: GraphSpec
  private readonly node: string
  private readonly featureSize: number
  private graph?: tf.GraphModel<tf.io.IOHandlerSync>

  constructor(args: GraphBaseArgs | SavedGraphConfig) {
    super({name: args.name, trainable: false, dtype: 'float32'})
    if (typeof args.graph === 'string') {
      const saved = args as SavedGraphConfig
      this.spec = {...(JSON.parse(unhex(saved.graph)) as Omit<GraphSpec, 'weightData'>), weightData: Buffer.from(saved.weights, 'hex').toString('base64')}
      this.node = unhex(saved.output)
    } else {
      this.spec = args.graph
      this.node = (args as GraphBaseArgs).output
    }
    this.featureSize = args.featureSize
  }

  /** The graph, loaded from the config on first use (its weights kept out of the caller's tidy scope). */
  private model(): tf.GraphModel<tf.io.IOHandlerSync> {
    if (!this.graph) {
      // Loading rewrites parts of the topology in place: it gets a copy, the config keeps the original.
      const spec = structuredClone(this.spec)
      const bytes = Buffer.from(spec.weightData, 'base64')
      this.graph = tf.loadGraphModelSync({
        modelTopology: spec.modelTopology,
        weightSpecs: spec.weightSpecs,
        weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
        ...(spec.signature ? {signature: spec.signature} : {}),
        ...(spec.modelInitializer ? {modelInitializer: spec.modelInitializer} : {}),
      })
      for (const tensors of Object.values(this.graph.weights)) for (const t of tensors) tf.keep(t)
    }
    return this.graph
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape
    return [shape[0] ?? null, this.featureSize]
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0]! : inputs
    return tf.tidy(() => {
      const out = this.model().execute(x, this.node) as tf.Tensor
      return out.rank === 4 ? tf.mean(out, [1, 2]) : out
    })
  }

  override getConfig(): tf.serialization.ConfigDict {
    const {weightData, ...graph} = this.spec
    const saved: Omit<SavedGraphConfig, 'name'> = {graph: hex(JSON.stringify(graph)), weights: Buffer.from(weightData, 'base64').toString('hex'), output: hex(this.node), featureSize: this.featureSize}
    return {...super.getConfig(), ...saved}
  }

  override dispose(): ReturnType<tf.layers.Layer['dispose']> {
    const result = super.dispose()
    if (result.refCountAfterDispose === 0) {
      this.graph?.dispose()
      this.graph = undefined
    }
    return result
  }
}

tf.serialization.registerClass(GraphBase)
