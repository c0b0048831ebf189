// Pretrained-base fixtures: a tiny MobileNet-like layers model and a tiny graph model written as
// tfjs model folders, and a loopback HTTP server that serves such a folder (optionally failing).
import {createServer, type Server} from 'node:http'
import {mkdir, readFile, writeFile} from 'node:fs/promises'
import type {AddressInfo} from 'node:net'
import path from 'node:path'
import * as tf from '../../src/lib/engine/tf.js'
import seedrandom from 'seedrandom'
import {saveModel} from '../../src/lib/model/artifact.js'
import {withSeededRandom} from '../../src/lib/train/rng.js'

/**
 * A MobileNetV2-shaped base for 16x16x3 images: zero padding, strided stem, batch norm, ReLU6,
 * depthwise conv, a residual add, average pooling + flatten ("features", 8 values), then a dense
 * classifier of its own ("logits") that a cut leaves out.
 */
export function tinyBase(size = 16, seed = 7): tf.LayersModel {
  return withSeededRandom(seedrandom.alea(String(seed)), () => {
    const input = tf.input({shape: [size, size, 3], name: 'input_1'})
    const padded = tf.layers.zeroPadding2d({padding: [[0, 1], [0, 1]], name: 'stem_pad'}).apply(input)
    const stem = tf.layers.conv2d({filters: 8, kernelSize: 3, strides: 2, padding: 'valid', useBias: false, name: 'stem_conv'}).apply(padded)
    const stemBn = tf.layers.batchNormalization({name: 'stem_bn', betaInitializer: 'randomNormal', movingMeanInitializer: 'randomNormal', movingVarianceInitializer: 'ones'}).apply(stem)
    const stemRelu = tf.layers.reLU({maxValue: 6, name: 'stem_relu'}).apply(stemBn) as tf.SymbolicTensor
    const dw = tf.layers.depthwiseConv2d({kernelSize: 3, padding: 'same', useBias: false, name: 'block_dw'}).apply(stemRelu)
    const dwBn = tf.layers.batchNormalization({name: 'block_dw_bn'}).apply(dw)
    const dwRelu = tf.layers.reLU({maxValue: 6, name: 'block_dw_relu'}).apply(dwBn)
    const project = tf.layers.conv2d({filters: 8, kernelSize: 1, useBias: false, name: 'block_project'}).apply(dwRelu)
    const projectBn = tf.layers.batchNormalization({name: 'block_project_bn'}).apply(project) as tf.SymbolicTensor
    const added = tf.layers.add({name: 'block_add'}).apply([stemRelu, projectBn])
    const pooled = tf.layers.averagePooling2d({poolSize: size / 2, name: 'pool'}).apply(added)
    const features = tf.layers.flatten({name: 'features'}).apply(pooled)
    const logits = tf.layers.dense({units: 4, activation: 'softmax', name: 'logits'}).apply(features) as tf.SymbolicTensor
    return tf.model({inputs: input, outputs: logits, name: 'tiny_base'})
  })
}

export async function writeTinyBase(dir: string, size = 16, seed = 7): Promise<string> {
  const model = tinyBase(size, seed)
  await saveModel(model, dir)
  model.dispose()
  return dir
}

/**
 * A graph model (the format tensorflowjs_converter writes for SavedModels): image [-1,16,16,3] ->
 * 1x1 conv (4 filters) -> relu ("relu", spatial) -> mean over H,W ("pooled", the output).
 */
export async function writeTinyGraphBase(dir: string): Promise<string> {
  const b64 = (s: string) => Buffer.from(s).toString('base64')
  const dims = (shape: number[]) => ({dim: shape.map((d) => ({size: String(d)}))})
  const node = [
    {name: 'image', op: 'Placeholder', attr: {dtype: {type: 'DT_FLOAT'}, shape: {shape: dims([-1, 16, 16, 3])}}},
    {name: 'kernel', op: 'Const', attr: {value: {tensor: {dtype: 'DT_FLOAT', tensorShape: dims([1, 1, 3, 4])}}, dtype: {type: 'DT_FLOAT'}}},
    {name: 'axes', op: 'Const', attr: {value: {tensor: {dtype: 'DT_INT32', tensorShape: dims([2])}}, dtype: {type: 'DT_INT32'}}},
    {
      name: 'conv',
      op: 'Conv2D',
      input: ['image', 'kernel'],
      attr: {
        T: {type: 'DT_FLOAT'},
        strides: {list: {i: ['1', '1', '1', '1']}},
        dilations: {list: {i: ['1', '1', '1', '1']}},
        padding: {s: b64('VALID')},
        data_format: {s: b64('NHWC')},
      },
    },
    {name: 'relu', op: 'Relu', input: ['conv'], attr: {T: {type: 'DT_FLOAT'}}},
    {name: 'pooled', op: 'Mean', input: ['relu', 'axes'], attr: {T: {type: 'DT_FLOAT'}, Tidx: {type: 'DT_INT32'}, keep_dims: {b: false}}},
  ]
  const kernel = Float32Array.from({length: 12}, (_, i) => ((i * 7) % 5) / 5 - 0.4)
  const axes = Int32Array.from([1, 2])
  const weights = Buffer.concat([Buffer.from(kernel.buffer), Buffer.from(axes.buffer)])
  await mkdir(dir, {recursive: true})
  await writeFile(path.join(dir, 'weights.bin'), weights)
  await writeFile(
    path.join(dir, 'model.json'),
    JSON.stringify({
      format: 'graph-model',
      generatedBy: 'test fixture',
      convertedBy: null,
      modelTopology: {node, library: {}, versions: {producer: 1}},
      weightsManifest: [
        {
          paths: ['weights.bin'],
          weights: [
            {name: 'kernel', shape: [1, 1, 3, 4], dtype: 'float32'},
            {name: 'axes', shape: [2], dtype: 'int32'},
          ],
        },
      ],
    }),
  )
  return dir
}

export interface StaticServer {
  url: string
  /** Paths requested so far. */
  requests: string[]
  /** Paths answered with HTTP 500 instead of the file. */
  failing: Set<string>
  close(): Promise<void>
}

/** Serves the files of `dir` over HTTP on 127.0.0.1 (an ephemeral port). */
export async function serveFolder(dir: string): Promise<StaticServer> {
  const requests: string[] = []
  const failing = new Set<string>()
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    requests.push(url.pathname)
    if (failing.has(url.pathname)) {
      res.writeHead(500).end('broken on purpose')
      return
    }
    readFile(path.join(dir, path.normalize(url.pathname).replace(/^(\.\.[/\\])+/, ''))).then(
      (data) => res.writeHead(200, {'content-type': 'application/octet-stream'}).end(data),
      () => res.writeHead(404).end('not found'),
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    failing,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections()
        server.close((error) => (error ? reject(error) : resolve()))
      }),
  }
}
