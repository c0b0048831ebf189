import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import {readFile} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import {promisify} from 'node:util'
import {after, before, describe, it} from 'node:test'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import protobuf from 'protobufjs'
import {KSERVE_PROTO, LOADER_OPTIONS, PROTOS_DIR, TFSERVING_PROTO} from '../../../src/lib/serve/grpc/protos.js'
import {JsonLog} from '../../../src/lib/serve/log.js'
import {serveOptions} from '../../../src/lib/serve/options.js'
import {startServer, type ServeHandle} from '../../../src/lib/serve/server.js'
import {tempDir} from '../../support/fixtures.js'
import {fp32Body, request, startDigitsServer, type DigitsServer} from '../../support/serve-fixtures.js'

const TOKEN_ENV = 'ML_TEST_GRPC_TOKEN'
const TOKEN = 'grpc-test-token'
const AUTH = {Authorization: `Bearer ${TOKEN}`}

type Unary = (request: object, metadata: grpc.Metadata, callback: (error: grpc.ServiceError | null, response: any) => void) => void
type Client = grpc.Client & Record<string, Unary>

/** Clients of both services, from the .proto files the package ships, as a user's client is built. */
function clients(port: number): {kserve: Client; tfserving: Client} {
  const definition = protoLoader.loadSync([KSERVE_PROTO, TFSERVING_PROTO], LOADER_OPTIONS)
  const loaded = grpc.loadPackageDefinition(definition) as any
  const address = `127.0.0.1:${port}`
  return {
    kserve: new loaded.inference.GRPCInferenceService(address, grpc.credentials.createInsecure()),
    tfserving: new loaded.tensorflow.serving.PredictionService(address, grpc.credentials.createInsecure()),
  }
}

function metadata(token: string | undefined): grpc.Metadata {
  const m = new grpc.Metadata()
  if (token !== undefined) m.set('authorization', `Bearer ${token}`)
  return m
}

/** A unary call sending `token` (default the server's; null: none). */
function call(client: Client, method: string, body: object, token: string | null = TOKEN): Promise<any> {
  return new Promise((resolve, reject) => client[method]!(body, metadata(token ?? undefined), (error, response) => (error ? reject(error) : resolve(response))))
}

/** The gRPC error of a call that must fail. */
async function failure(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise
  } catch (error) {
    return error as grpc.ServiceError
  }
  assert.fail('the call succeeded')
}

function floatsOf(bytes: Buffer): number[] {
  return Array.from(new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)))
}

/** Triton's raw BYTES tensor: each element a 4-byte little-endian length and its bytes. */
function elements(items: Buffer[]): Buffer {
  return Buffer.concat(items.flatMap((item) => {
    const length = Buffer.alloc(4)
    length.writeUInt32LE(item.length)
    return [length, item]
  }))
}

function assertClose(actual: number[], expected: ArrayLike<number>, tolerance = 1e-5): void {
  assert.equal(actual.length, expected.length)
  for (let i = 0; i < actual.length; i++) assert.ok(Math.abs(actual[i]! - expected[i]!) <= tolerance, `element ${i}: ${actual[i]} vs ${expected[i]}`)
}

describe('gRPC port: KServe V2 GRPCInferenceService and TF Serving PredictionService', () => {
  let fixture: DigitsServer
  let server: ServeHandle
  let kserve: Client
  let tfserving: Client
  let pngs: Buffer[]
  let floats: Float32Array[]
  /** The HTTP port's KServe V2 answer for the ten digits: the reference for every gRPC answer. */
  let httpAnswer: number[]

  before(async () => {
    process.env[TOKEN_ENV] = TOKEN
    fixture = await startDigitsServer('ml-serve-grpc-', {grpc: {port: 0}, auth: {tokenEnv: TOKEN_ENV}})
    server = fixture.server
    pngs = fixture.digits.map((d) => d.png)
    floats = fixture.floats
    assert.ok(server.grpcPort! > 0)
    ;({kserve, tfserving} = clients(server.grpcPort!))
    const http = await request(`${server.url}/v2/models/digits/infer`, {body: fp32Body(floats), headers: AUTH})
    assert.equal(http.status, 200, http.text)
    httpAnswer = http.json.outputs[0].data
    assertClose(httpAnswer, fixture.expected, 1e-4)
  })

  /** A second server with gRPC on the same model, with `fields` of its own (the caller stops it). */
  const anotherServer = (fields: Partial<Parameters<typeof serveOptions>[0]>) => {
    const version = server.repository.models.get('digits')!.versions.get(1)!
    return startServer(serveOptions({
      repository: path.dirname(path.dirname(version.dir)),
      models: [{name: 'digits', labels: {}}],
      port: 0,
      grpc: {port: 0},
      instances: 1,
      pollIntervalMs: 0,
      accessLog: 'off',
      engine: 'wasm',
      ...fields,
    }), {log: new JsonLog(undefined)})
  }

  after(async () => {
    kserve?.close()
    tfserving?.close()
    await fixture?.close()
    delete process.env[TOKEN_ENV]
  })

  it('answers liveness and readiness without a token, and server and model metadata with one', async () => {
    assert.deepEqual(await call(kserve, 'ServerLive', {}, null), {live: true})
    assert.deepEqual(await call(kserve, 'ServerReady', {}, null), {ready: true})
    assert.deepEqual(await call(kserve, 'ModelReady', {name: 'digits', version: ''}, null), {ready: true})
    assert.deepEqual(await call(kserve, 'ModelReady', {name: 'digits', version: '7'}), {ready: false})
    const meta = await call(kserve, 'ServerMetadata', {})
    assert.equal(meta.name, 'ml')
    assert.ok(meta.extensions.includes('classification'))
    const model = await call(kserve, 'ModelMetadata', {name: 'digits', version: ''})
    const http = await request(`${server.url}/v2/models/digits`, {headers: AUTH})
    assert.deepEqual(model, http.json)
    assert.deepEqual(model.inputs, [{name: 'image', datatype: 'FP32', shape: [-1, 28, 28, 1]}])
    const index = await call(kserve, 'RepositoryIndex', {repository_name: '', ready: true})
    assert.deepEqual(index.models, [{name: 'digits', version: '1', state: 'READY', reason: ''}])
  })

  it('ModelInfer with raw_input_contents answers raw_output_contents equal to the HTTP answer', async () => {
    const raw = Buffer.concat(floats.map((f) => Buffer.from(f.buffer, f.byteOffset, f.byteLength)))
    const answer = await call(kserve, 'ModelInfer', {model_name: 'digits', id: 'r1', inputs: [{name: 'image', datatype: 'FP32', shape: [10, 28, 28, 1]}], raw_input_contents: [raw]})
    assert.equal(answer.model_name, 'digits')
    assert.equal(answer.model_version, '1')
    assert.equal(answer.id, 'r1')
    assert.deepEqual(answer.outputs.map((o: any) => [o.name, o.datatype, o.shape]), [['probabilities', 'FP32', [10, 10]]])
    assert.equal(answer.raw_output_contents.length, 1)
    assertClose(floatsOf(answer.raw_output_contents[0]), httpAnswer)
    // Encoded images as a raw BYTES tensor, and the classification extension.
    const images = await call(kserve, 'ModelInfer', {
      model_name: 'digits',
      model_version: '1',
      inputs: [{name: 'image', datatype: 'BYTES', shape: [10]}],
      outputs: [{name: 'probabilities'}, {name: 'probabilities', parameters: {classification: {int64_param: 1}}}],
      raw_input_contents: [elements(pngs)],
    })
    assertClose(floatsOf(images.raw_output_contents[0]), httpAnswer)
    assert.deepEqual(images.outputs[1].shape, [10, 1])
    const top = images.raw_output_contents[1] as Buffer
    const labels: string[] = []
    for (let at = 0; at < top.length; at += 4 + top.readUInt32LE(at)) labels.push(top.subarray(at + 4, at + 4 + top.readUInt32LE(at)).toString())
    const best = Array.from({length: 10}, (_, row) => httpAnswer.slice(row * 10, row * 10 + 10).reduce((b, v, i, all) => (v > all[b]! ? i : b), 0))
    assert.deepEqual(labels.map((l) => l.split(':')[1]), best.map(String))
  })

  it('ModelInfer with typed contents (fp32_contents, bytes_contents) answers typed contents equal to the HTTP answer', async () => {
    const typed = await call(kserve, 'ModelInfer', {
      model_name: 'digits',
      inputs: [{name: 'image', datatype: 'FP32', shape: [10, 28, 28, 1], contents: {fp32_contents: floats.flatMap((f) => Array.from(f))}}],
    })
    assert.deepEqual(typed.raw_output_contents, [])
    assertClose(typed.outputs[0].contents.fp32_contents, httpAnswer)
    const images = await call(kserve, 'ModelInfer', {model_name: 'digits', inputs: [{name: 'image', datatype: 'BYTES', shape: [10, 1], contents: {bytes_contents: pngs}}]})
    assertClose(images.outputs[0].contents.fp32_contents, httpAnswer)
  })

  it('a wrong shape, datatype, input or model gets the gRPC code and message Triton clients expect', async () => {
    const shape = await failure(call(kserve, 'ModelInfer', {model_name: 'digits', inputs: [{name: 'image', datatype: 'FP32', shape: [1, 32, 32, 1], contents: {fp32_contents: new Array(1024).fill(0)}}]}))
    assert.equal(shape.code, grpc.status.INVALID_ARGUMENT)
    assert.match(shape.details, /shape \[1,32,32,1\] does not match the model input \[-1,28,28,1\]/)
    const datatype = await failure(call(kserve, 'ModelInfer', {model_name: 'digits', inputs: [{name: 'image', datatype: 'INT32', shape: [1, 28, 28, 1], contents: {int_contents: new Array(784).fill(0)}}]}))
    assert.equal(datatype.code, grpc.status.INVALID_ARGUMENT)
    assert.match(datatype.details, /datatype "INT32" is not accepted; send FP32/)
    const size = await failure(call(kserve, 'ModelInfer', {model_name: 'digits', inputs: [{name: 'image', datatype: 'FP32', shape: [2, 28, 28, 1]}], raw_input_contents: [Buffer.alloc(784 * 4)]}))
    assert.equal(size.code, grpc.status.INVALID_ARGUMENT)
    assert.match(size.details, /needs 1568 FP32 values \(6272 bytes\), raw_input_contents has 3136 bytes/)
    const name = await failure(call(kserve, 'ModelInfer', {model_name: 'digits', inputs: [{name: 'pixels', datatype: 'BYTES', shape: [1], contents: {bytes_contents: [pngs[0]]}}]}))
    assert.match(name.details, /its input is "image"/)
    const image = await failure(call(kserve, 'ModelInfer', {model_name: 'digits', inputs: [{name: 'image', datatype: 'BYTES', shape: [1], contents: {bytes_contents: [Buffer.from('not an image')]}}]}))
    assert.equal(image.code, grpc.status.INVALID_ARGUMENT)
    const model = await failure(call(kserve, 'ModelInfer', {model_name: 'nope', inputs: [{name: 'image', datatype: 'BYTES', shape: [1], contents: {bytes_contents: [pngs[0]]}}]}))
    assert.equal(model.code, grpc.status.NOT_FOUND)
    assert.match(model.details, /unknown model "nope"/)
    // A method of Triton's service that ml serve does not offer (ModelConfig).
    const unimplemented = await failure(new Promise((resolve, reject) => {
      kserve.makeUnaryRequest('/inference.GRPCInferenceService/ModelConfig', (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), metadata(TOKEN), (error, response) => (error ? reject(error) : resolve(response)))
    }))
    assert.equal(unimplemented.code, grpc.status.UNIMPLEMENTED)
  })

  it('refuses every call but liveness and readiness without the bearer token in the authorization metadata', async () => {
    for (const [method, body] of [['ModelInfer', {model_name: 'digits', inputs: [{name: 'image', datatype: 'BYTES', shape: [1], contents: {bytes_contents: [pngs[0]]}}]}], ['ModelMetadata', {name: 'digits'}], ['ServerMetadata', {}]] as const) {
      const missing = await failure(call(kserve, method, body, null))
      assert.equal(missing.code, grpc.status.UNAUTHENTICATED, method)
      assert.match(missing.details, /a bearer token is required/)
      const wrong = await failure(call(kserve, method, body, 'not-the-token'))
      assert.equal(wrong.code, grpc.status.UNAUTHENTICATED, method)
      assert.match(wrong.details, /invalid bearer token/)
    }
    // Readiness is open, but an anonymous caller's error names no served model.
    const anonymous = await failure(call(kserve, 'ModelReady', {name: 'nope', version: ''}, null))
    assert.equal(anonymous.code, grpc.status.NOT_FOUND)
    assert.doesNotMatch(anonymous.details, /digits|nope/)
    const named = await failure(call(kserve, 'ModelReady', {name: 'nope', version: ''}))
    assert.match(named.details, /unknown model "nope".*digits/)
    const predict = await failure(call(tfserving, 'Predict', {model_spec: {name: 'digits'}, inputs: {}}, null))
    assert.equal(predict.code, grpc.status.UNAUTHENTICATED)
  })

  it('TF Serving Predict (DT_STRING images, DT_FLOAT tensor_content) equals the REST :predict answer', async () => {
    const rest = await request(`${server.url}/v1/models/digits:predict`, {body: {instances: pngs.map((png) => ({b64: png.toString('base64')}))}, headers: AUTH})
    assert.equal(rest.status, 200, rest.text)
    const restValues = (rest.json.predictions as number[][]).flat()
    const strings = await call(tfserving, 'Predict', {
      model_spec: {name: 'digits', signature_name: 'serving_default'},
      inputs: {image: {dtype: 'DT_STRING', tensor_shape: {dim: [{size: 10}]}, string_val: pngs}},
    })
    assert.deepEqual(strings.model_spec, {name: 'digits', version: {value: 1}, signature_name: 'serving_default', version_choice: 'version'})
    const output = strings.outputs.probabilities
    assert.equal(output.dtype, 'DT_FLOAT')
    assert.deepEqual(output.tensor_shape.dim.map((d: {size: number}) => d.size), [10, 10])
    assertClose(output.float_val, restValues)
    const content = Buffer.concat(floats.map((f) => Buffer.from(f.buffer, f.byteOffset, f.byteLength)))
    const dense = await call(tfserving, 'Predict', {
      model_spec: {name: 'digits', version: {value: 1}},
      inputs: {image: {dtype: 'DT_FLOAT', tensor_shape: {dim: [{size: 10}, {size: 28}, {size: 28}, {size: 1}]}, tensor_content: content}},
      output_filter: ['probabilities'],
    })
    assertClose(dense.outputs.probabilities.float_val, httpAnswer)
    const wrong = await failure(call(tfserving, 'Predict', {model_spec: {name: 'digits'}, inputs: {image: {dtype: 'DT_INT32', tensor_shape: {dim: [{size: 1}]}}}}))
    assert.equal(wrong.code, grpc.status.INVALID_ARGUMENT)
    assert.match(wrong.details, /dtype DT_INT32 is not accepted/)
    const signature = await failure(call(tfserving, 'Predict', {model_spec: {name: 'digits', signature_name: 'other'}, inputs: {}}))
    assert.match(signature.details, /Serving signature name: "other" not found/)
  })

  it('TF Serving Classify equals the REST :classify answer, and GetModelMetadata holds the signature', async () => {
    const rest = await request(`${server.url}/v1/models/digits:classify`, {body: {examples: pngs.map((png) => ({image: {b64: png.toString('base64')}}))}, headers: AUTH})
    assert.equal(rest.status, 200, rest.text)
    const answer = await call(tfserving, 'Classify', {
      model_spec: {name: 'digits'},
      input: {example_list: {examples: pngs.map((png) => ({features: {feature: {image: {bytes_list: {value: [png]}}}}}))}},
    })
    const classes = answer.result.classifications.map((c: {classes: Array<{label: string; score: number}>}) => c.classes.map(({label, score}) => [label, score]))
    assert.equal(classes.length, 10)
    classes.forEach((row: Array<[string, number]>, i: number) => {
      assert.deepEqual(row.map(([label]) => label), (rest.json.results[i] as Array<[string, number]>).map(([label]) => label))
      assertClose(row.map(([, score]) => score), (rest.json.results[i] as Array<[string, number]>).map(([, score]) => score))
    })
    const meta = await call(tfserving, 'GetModelMetadata', {model_spec: {name: 'digits'}, metadata_field: ['signature_def']})
    const any = meta.metadata.signature_def
    assert.equal(any.type_url, 'type.googleapis.com/tensorflow.serving.SignatureDefMap')
    const root = new protobuf.Root()
    root.resolvePath = (_origin, target) => `${PROTOS_DIR}${target}`
    const decoded = root.loadSync(TFSERVING_PROTO, {keepCase: true}).lookupType('tensorflow.serving.SignatureDefMap').toObject(
      root.lookupType('tensorflow.serving.SignatureDefMap').decode(any.value), {longs: Number, enums: String},
    ) as any
    const signature = decoded.signature_def.serving_default
    assert.deepEqual(signature.inputs.image.tensor_shape.dim.map((d: {size: number}) => d.size), [-1, 28, 28, 1])
    assert.equal(signature.inputs.image.dtype, 'DT_FLOAT')
    assert.deepEqual(signature.outputs.probabilities.tensor_shape.dim.map((d: {size: number}) => d.size), [-1, 10])
  })

  it('counts gRPC calls in the same metrics as HTTP, under protocol="grpc" (health checks under "health")', async () => {
    const text = await server.metrics.registry.metrics()
    assert.match(text, /ml_serve_requests_total\{model="digits",version="1",protocol="grpc",status="200"\} [1-9]/)
    assert.match(text, /ml_serve_requests_total\{model="digits",version="1",protocol="grpc",status="400"\} [1-9]/)
    assert.match(text, /ml_serve_requests_total\{model="",version="",protocol="grpc",status="401"\} [1-9]/)
    assert.match(text, /nv_inference_request_success\{model="digits",version="1"\} [1-9]/)
    // Liveness and readiness count as health checks, as over HTTP.
    assert.match(text, /ml_serve_requests_total\{model="digits",version="1",protocol="health",status="200"\} [1-9]/)
    assert.match(text, /ml_serve_requests_total\{model="",version="",protocol="health",status="200"\} [1-9]/)
  })

  it('serves gRPC over TLS with serve.tls, as HTTPS', async (t) => {
    const temp = await tempDir('ml-serve-grpc-tls-')
    t.after(() => temp.cleanup())
    const cert = path.join(temp.dir, 'cert.pem')
    const key = path.join(temp.dir, 'key.pem')
    try {
      await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'])
    } catch (error) {
      t.skip(`openssl could not make a self-signed certificate (${(error as Error).message.split('\n')[0]})`)
      return
    }
    const tls = await anotherServer({tls: {cert, key}})
    t.after(() => tls.close())
    const definition = grpc.loadPackageDefinition(protoLoader.loadSync(KSERVE_PROTO, LOADER_OPTIONS)) as any
    const secure: Client = new definition.inference.GRPCInferenceService(`127.0.0.1:${tls.grpcPort}`, grpc.credentials.createSsl(await readFile(cert)))
    const plain: Client = new definition.inference.GRPCInferenceService(`127.0.0.1:${tls.grpcPort}`, grpc.credentials.createInsecure())
    t.after(() => {
      secure.close()
      plain.close()
    })
    const answer = await call(secure, 'ModelInfer', {model_name: 'digits', inputs: [{name: 'image', datatype: 'BYTES', shape: [10], contents: {bytes_contents: pngs}}]})
    assertClose(answer.outputs[0].contents.fp32_contents, httpAnswer)
    const refused = await failure(call(plain, 'ServerLive', {}))
    assert.equal(refused.code, grpc.status.UNAVAILABLE)
  })

  it('a gRPC port in use is the user\'s error (SERVE_LISTEN) naming the port and the flag to change', async () => {
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    try {
      const port = (blocker.address() as net.AddressInfo).port
      const version = server.repository.models.get('digits')!.versions.get(1)!
      const options = serveOptions({repository: path.dirname(path.dirname(version.dir)), models: [{name: 'digits', labels: {}}], port: 0, grpc: {port}, instances: 1, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm'})
      await assert.rejects(startServer(options, {log: new JsonLog(undefined)}), (error: Error & {code?: string}) => {
        assert.equal(error.code, 'SERVE_LISTEN')
        assert.match(error.message, new RegExp(`cannot listen for gRPC on 127\\.0\\.0\\.1:${port}: the port is in use`))
        assert.match((error as Error & {suggestions?: string[]}).suggestions?.join(' ') ?? '', /--grpc-port/)
        return true
      })
    } finally {
      blocker.close()
    }
  })

  it('the shutdown delay sends GOAWAY: clients reconnect while the port keeps serving, not ready', async (t) => {
    // Ended by the test (skipDelay), never by its timer.
    const delayed = await anotherServer({shutdownDelayMs: 600_000})
    const client = clients(delayed.grpcPort!).kserve
    t.after(async () => {
      client.close()
      await delayed.shutdown({skipDelay: true})
    })
    const live = await call(client, 'ServerLive', {})
    assert.equal(live.live, true)
    const channel = client.getChannel()
    assert.equal(channel.getConnectivityState(false), grpc.connectivityState.READY)
    const shutdown = delayed.shutdown()
    // The connection leaves READY only when the server sends GOAWAY (the deadline just bounds a failure).
    const changed = await new Promise<Error | undefined>((resolve) => channel.watchConnectivityState(grpc.connectivityState.READY, Date.now() + 30_000, resolve))
    assert.equal(changed, undefined, 'the connection stayed open: no GOAWAY during the shutdown delay')
    assert.equal(delayed.ready(), false)
    // A new connection is still served for the rest of the delay.
    const answer = await call(client, 'ModelInfer', {model_name: 'digits', inputs: [{name: 'image', datatype: 'BYTES', shape: [1], contents: {bytes_contents: [pngs[0]]}}]})
    assert.equal(answer.outputs[0].contents.fp32_contents.length, 10)
    await delayed.shutdown({skipDelay: true})
    await shutdown
  })

  // Last: it stops the server.
  it('shutdown answers the calls in flight, then refuses new ones', async () => {
    const body = {model_name: 'digits', inputs: [{name: 'image', datatype: 'BYTES', shape: [10], contents: {bytes_contents: pngs}}]}
    const handledBefore = server.handled()
    const held = Array.from({length: 6}, () => call(kserve, 'ModelInfer', body))
    // Until the server has received all six (the handle counts gRPC calls with HTTP requests).
    while (server.inFlight() < 6) await new Promise((resolve) => setImmediate(resolve))
    const closed = server.close()
    const answers = await Promise.all(held)
    for (const answer of answers) assertClose(answer.outputs[0].contents.fp32_contents, httpAnswer)
    await closed
    assert.equal(server.inFlight(), 0)
    assert.equal(server.handled(), handledBefore + 6)
    const refused = await failure(call(kserve, 'ServerLive', {}))
    assert.equal(refused.code, grpc.status.UNAVAILABLE)
  })
})
