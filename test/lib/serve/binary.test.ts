import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'
import type {ServeHandle} from '../../../src/lib/serve/server.js'
import {fp32Body, request, startDigitsServer, type DigitsServer, type HttpResult} from '../../support/serve-fixtures.js'

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  assert.equal(actual.length, expected.length)
  for (let i = 0; i < actual.length; i++) assert.ok(Math.abs(actual[i]! - expected[i]!) <= tolerance, `element ${i}: ${actual[i]} vs ${expected[i]}`)
}

function assertError(result: HttpResult, status: number, pattern: RegExp): void {
  assert.equal(result.status, status, `expected ${status}, got ${result.status}: ${result.text}`)
  assert.deepEqual(Object.keys(result.json ?? {}), ['error'], `error body: ${result.text}`)
  assert.match(result.json.error, pattern)
}

// Tensors as tritonclient serialises them: little-endian, row-major; a BYTES element is a 4-byte
// little-endian length and then its bytes.
function fp32Tensor(images: Float32Array[]): Buffer {
  const out = Buffer.alloc(images.reduce((sum, image) => sum + image.length * 4, 0))
  let offset = 0
  for (const image of images) for (const v of image) offset = out.writeFloatLE(v, offset)
  return out
}

function bytesTensor(elements: Buffer[]): Buffer {
  const parts: Buffer[] = []
  for (const element of elements) {
    const length = Buffer.alloc(4)
    length.writeUInt32LE(element.length)
    parts.push(length, element)
  }
  return Buffer.concat(parts)
}

/** The JSON request followed by the binary tensors, and the header that says where the JSON ends. */
function tritonBody(json: object, tensors: Buffer[], contentType: string | undefined = 'application/octet-stream'): {body: Buffer; headers: Record<string, string>} {
  const head = Buffer.from(JSON.stringify(json), 'utf8')
  const headers: Record<string, string> = {'Inference-Header-Content-Length': String(head.length)}
  if (contentType !== undefined) headers['Content-Type'] = contentType
  return {body: Buffer.concat([head, ...tensors]), headers}
}

function binaryImageInput(tensor: Buffer, n: number): object {
  return {name: 'image', shape: [n, 28, 28, 1], datatype: 'FP32', parameters: {binary_data_size: tensor.length}}
}

/** A binary response split as tritonclient splits it: the JSON, then each binary output's bytes. */
function binaryResponse(result: HttpResult): {json: any; tensors: Array<Buffer | undefined>} {
  assert.equal(result.status, 200, result.text)
  assert.equal(result.headers['content-type'], 'application/octet-stream')
  const length = Number(result.headers['inference-header-content-length'])
  assert.ok(Number.isInteger(length) && length > 0 && length <= result.body.length, `Inference-Header-Content-Length: ${length}`)
  const json = JSON.parse(result.body.subarray(0, length).toString('utf8'))
  let offset = length
  const tensors = (json.outputs as Array<{parameters?: {binary_data_size?: number}}>).map((output) => {
    const size = output.parameters?.binary_data_size
    if (size === undefined) return undefined
    offset += size
    return result.body.subarray(offset - size, offset)
  })
  assert.equal(offset, result.body.length, 'the binary outputs fill the rest of the body')
  return {json, tensors}
}

function readFloats(bytes: Buffer): number[] {
  return Array.from({length: bytes.length / 4}, (_, i) => bytes.readFloatLE(i * 4))
}

function readStrings(bytes: Buffer): string[] {
  const out: string[] = []
  for (let offset = 0; offset < bytes.length;) {
    const length = bytes.readUInt32LE(offset)
    out.push(bytes.subarray(offset + 4, offset + 4 + length).toString('utf8'))
    offset += 4 + length
  }
  return out
}

describe('KServe V2 binary tensor data extension', () => {
  let fixture: DigitsServer
  let server: ServeHandle
  let infer: string
  let digits: Array<{label: string; png: Buffer}>
  let floats: Float32Array[]
  let expected: Float32Array

  before(async () => {
    fixture = await startDigitsServer('ml-serve-binary-')
    ;({server, digits, floats, expected} = fixture)
    infer = `${server.url}/v2/models/digits/infer`
  })

  after(async () => {
    await fixture?.close()
  })

  it('GET /v2 lists the binary_tensor_data extension', async () => {
    const {status, json} = await request(`${server.url}/v2`)
    assert.equal(status, 200)
    assert.deepEqual(json.extensions, ['classification', 'model_repository', 'binary_tensor_data'])
  })

  it('a binary FP32 input gives what the same JSON request gives, whatever the Content-Type', async () => {
    const images = floats.slice(0, 3)
    const viaJson = await request(infer, {body: fp32Body(images)})
    assert.equal(viaJson.status, 200, viaJson.text)
    const tensor = fp32Tensor(images)
    for (const contentType of ['application/octet-stream', undefined, 'application/json']) {
      const result = await request(infer, tritonBody({id: 'b-1', inputs: [binaryImageInput(tensor, 3)]}, [tensor], contentType))
      assert.equal(result.status, 200, `${contentType}: ${result.text}`)
      // Outputs not asked for as binary come back as plain JSON, as Triton answers them.
      assert.equal(result.headers['inference-header-content-length'], undefined)
      assert.equal(result.headers['content-type'], 'application/json')
      assert.equal(result.json.id, 'b-1')
      const [output] = result.json.outputs
      assert.deepEqual({name: output.name, datatype: output.datatype, shape: output.shape}, {name: 'probabilities', datatype: 'FP32', shape: [3, 10]})
      assertClose(output.data, viaJson.json.outputs[0].data, 1e-6)
      assertClose(output.data, expected.subarray(0, 30), 1e-5)
    }
  })

  it('returns an output as binary when asked per output, or for all by binary_data_output', async () => {
    const images = floats.slice(3, 6)
    const reference = (await request(infer, {body: fp32Body(images)})).json.outputs[0].data as number[]
    const tensor = fp32Tensor(images)
    const input = binaryImageInput(tensor, 3)
    const asked = [
      {inputs: [input], outputs: [{name: 'probabilities', parameters: {binary_data: true}}]},
      {inputs: [input], parameters: {binary_data_output: true}},
      {inputs: [input], parameters: {binary_data_output: true}, outputs: [{name: 'probabilities'}]},
    ]
    for (const json of asked) {
      const {json: response, tensors} = binaryResponse(await request(infer, tritonBody(json, [tensor])))
      assert.equal(response.model_name, 'digits')
      assert.deepEqual(response.outputs, [{name: 'probabilities', datatype: 'FP32', shape: [3, 10], parameters: {binary_data_size: 120}}])
      assertClose(readFloats(tensors[0]!), reference, 1e-6)
    }
    // An output's binary_data: false overrides binary_data_output.
    const overridden = await request(infer, tritonBody({inputs: [input], parameters: {binary_data_output: true}, outputs: [{name: 'probabilities', parameters: {binary_data: false}}]}, [tensor]))
    assert.equal(overridden.headers['content-type'], 'application/json')
    assertClose(overridden.json.outputs[0].data, reference, 1e-6)
    // A plain JSON request may ask for binary outputs too; binary and JSON outputs keep their order.
    const mixed = binaryResponse(await request(infer, {body: {...fp32Body(images), outputs: [{name: 'probabilities', parameters: {classification: 2}}, {name: 'probabilities', parameters: {binary_data: true}}]}}))
    assert.equal(mixed.json.outputs[0].datatype, 'BYTES')
    assert.equal(mixed.json.outputs[0].data.length, 6)
    assert.equal(mixed.tensors[0], undefined)
    assert.deepEqual(mixed.json.outputs[1].parameters, {binary_data_size: 120})
    assertClose(readFloats(mixed.tensors[1]!), reference, 1e-6)
  })

  it('binary BYTES inputs carry whole PNG files', async () => {
    const pngs = digits.map((d) => d.png)
    const tensor = bytesTensor(pngs)
    const viaJson = await request(infer, {body: {inputs: [{name: 'image', shape: [10], datatype: 'BYTES', data: pngs.map((png) => png.toString('base64'))}]}})
    assert.equal(viaJson.status, 200, viaJson.text)
    for (const shape of [[10], [10, 1]]) {
      const result = await request(infer, tritonBody({inputs: [{name: 'image', shape, datatype: 'BYTES', parameters: {binary_data_size: tensor.length}}], parameters: {binary_data_output: true}}, [tensor]))
      const {json, tensors} = binaryResponse(result)
      assert.deepEqual(json.outputs[0].shape, [10, 10])
      const probabilities = readFloats(tensors[0]!)
      assertClose(probabilities, viaJson.json.outputs[0].data, 1e-6)
      assertClose(probabilities, expected, 1e-5)
    }
  })

  it('the classification extension returns binary BYTES strings, each with its length', async () => {
    const tensor = fp32Tensor(floats.slice(0, 2))
    const outputs = [{name: 'probabilities', parameters: {classification: 3, binary_data: true}}]
    const viaJson = await request(infer, {body: {...fp32Body(floats.slice(0, 2)), outputs: [{name: 'probabilities', parameters: {classification: 3}}]}})
    const {json, tensors} = binaryResponse(await request(infer, tritonBody({inputs: [binaryImageInput(tensor, 2)], outputs}, [tensor])))
    const [output] = json.outputs
    assert.deepEqual({name: output.name, datatype: output.datatype, shape: output.shape}, {name: 'probabilities', datatype: 'BYTES', shape: [2, 3]})
    assert.equal(output.data, undefined)
    assert.equal(output.parameters.binary_data_size, tensors[0]!.length)
    const strings = readStrings(tensors[0]!)
    assert.deepEqual(strings, viaJson.json.outputs[0].data)
    for (let row = 0; row < 2; row++) {
      const scores = Array.from(expected.subarray(row * 10, row * 10 + 10))
      const best = scores.indexOf(Math.max(...scores))
      assert.equal(strings[row * 3], `${scores[best]!.toFixed(6)}:${best}:${best}`)
    }
  })

  it('rejects malformed binary requests with 400 and what is wrong', async () => {
    const one = fp32Tensor([floats[0]!])
    const good = tritonBody({inputs: [binaryImageInput(one, 1)]}, [one])
    const send = (body: Buffer, headers: Record<string, string>) => request(infer, {body, headers})
    const withHeader = (value: string) => send(good.body, {...good.headers, 'Inference-Header-Content-Length': value})
    const length = Number(good.headers['Inference-Header-Content-Length'])

    assertError(await withHeader(String(good.body.length + 1)), 400, new RegExp(`Inference-Header-Content-Length ${good.body.length + 1} is larger than the ${good.body.length}-byte request body`))
    assertError(await withHeader('99999999999999999999'), 400, /is larger than the/)
    assertError(await withHeader('-5'), 400, /Inference-Header-Content-Length must be a non-negative integer .*got "-5"/)
    assertError(await withHeader('12.5'), 400, /must be a non-negative integer .*got "12.5"/)
    assertError(await withHeader('abc'), 400, /must be a non-negative integer/)
    assertError(await withHeader('0'), 400, /Inference-Header-Content-Length is 0/)
    assertError(await withHeader(String(length - 3)), 400, new RegExp(`the first ${length - 3} bytes of the body \\(Inference-Header-Content-Length\\): malformed JSON`))

    // The declared sizes must use up the binary data exactly.
    const short = tritonBody({inputs: [binaryImageInput(one, 1)]}, [one, Buffer.alloc(4)])
    assertError(await send(short.body, short.headers), 400, /binary_data_size add up to 3136 bytes, but 3140 bytes of binary data follow the JSON/)
    const truncated = tritonBody({inputs: [binaryImageInput(one, 1)]}, [one.subarray(0, 3000)])
    assertError(await send(truncated.body, truncated.headers), 400, /input "image": binary_data_size 3136 goes past the end of the body; 3000 bytes of binary data are left for it/)
    const stray = tritonBody(fp32Body([floats[0]!]), [Buffer.alloc(8)])
    assertError(await send(stray.body, stray.headers), 400, /add up to 0 bytes, but 8 bytes of binary data follow the JSON/)

    // The size must be what the shape and datatype need.
    const wrongShape = tritonBody({inputs: [{...binaryImageInput(one, 1), shape: [2, 28, 28, 1]}]}, [one])
    assertError(await send(wrongShape.body, wrongShape.headers), 400, /shape \[2,28,28,1\] needs 1568 FP32 values \(6272 bytes\), but its binary_data_size is 3136/)
    const odd = tritonBody({inputs: [binaryImageInput(one.subarray(0, 3135), 1)]}, [one.subarray(0, 3135)])
    assertError(await send(odd.body, odd.headers), 400, /needs 784 FP32 values \(3136 bytes\), but its binary_data_size is 3135/)

    for (const [size, shown] of [[-4, /-4$/], [3.5, /3\.5$/], ['3136', /"3136"$/], [null, /null$/]] as const) {
      const bad = tritonBody({inputs: [{name: 'image', shape: [1, 28, 28, 1], datatype: 'FP32', parameters: {binary_data_size: size}}]}, [one])
      const result = await send(bad.body, bad.headers)
      assertError(result, 400, /input "image": parameters.binary_data_size must be a non-negative integer, got /)
      assert.match(result.json.error, shown)
    }
    const both = tritonBody({inputs: [{...binaryImageInput(one, 1), data: Array.from(floats[0]!)}]}, [one])
    assertError(await send(both.body, both.headers), 400, /input "image" has both "data" and parameters.binary_data_size/)
    assertError(await request(infer, {body: {inputs: [binaryImageInput(one, 1)]}}), 400, /has parameters.binary_data_size, but the request has no Inference-Header-Content-Length header/)
    const notObject = tritonBody({inputs: [{...binaryImageInput(one, 1), parameters: 3136}]}, [one])
    assertError(await send(notObject.body, notObject.headers), 400, /inputs\[0\].parameters must be an object/)

    // BYTES elements must each fit, and there must be as many as the shape says.
    const png = digits[0]!.png
    const bytesBody = (tensor: Buffer, shape = [1]) => tritonBody({inputs: [{name: 'image', shape, datatype: 'BYTES', parameters: {binary_data_size: tensor.length}}]}, [tensor])
    const overlong = bytesTensor([png])
    overlong.writeUInt32LE(png.length + 1)
    let body = bytesBody(overlong)
    assertError(await send(body.body, body.headers), 400, new RegExp(`input "image" binary data: BYTES element 0 declares ${png.length + 1} bytes, only ${png.length} remain`))
    body = bytesBody(Buffer.concat([bytesTensor([png]), Buffer.alloc(2)]))
    assertError(await send(body.body, body.headers), 400, /2 bytes after 1 BYTES elements, too few for the 4-byte length/)
    body = bytesBody(bytesTensor([png]), [2])
    assertError(await send(body.body, body.headers), 400, /shape \[2\] needs 2 elements, the binary data has 1/)
    body = bytesBody(bytesTensor([Buffer.from('not an image at all')]))
    assertError(await send(body.body, body.headers), 400, /not a recognised image format/)

    // The same answers as the JSON path for what it shares.
    const int32 = tritonBody({inputs: [{...binaryImageInput(one, 1), datatype: 'INT32'}]}, [one])
    assertError(await send(int32.body, int32.headers), 400, /datatype "INT32" is not accepted/)
    const eleven = fp32Tensor(Array.from({length: 11}, () => floats[0]!))
    const big = tritonBody({inputs: [binaryImageInput(eleven, 11)]}, [eleven])
    assertError(await send(big.body, big.headers), 400, /11 images in one request is over serve.maxBatchSize \(10\)/)
    const named = tritonBody({inputs: [{...binaryImageInput(one, 1), name: 'pixels'}]}, [one])
    assertError(await send(named.body, named.headers), 400, /unexpected inference input "pixels"/)

    // Output parameters.
    const flag = tritonBody({inputs: [binaryImageInput(one, 1)], outputs: [{name: 'probabilities', parameters: {binary_data: 'yes'}}]}, [one])
    assertError(await send(flag.body, flag.headers), 400, /outputs\[0\].parameters.binary_data must be true or false, got "yes"/)
    const all = tritonBody({inputs: [binaryImageInput(one, 1)], parameters: {binary_data_output: 1}}, [one])
    assertError(await send(all.body, all.headers), 400, /parameters.binary_data_output must be true or false, got 1/)
    const params = tritonBody({inputs: [binaryImageInput(one, 1)], parameters: [true]}, [one])
    assertError(await send(params.body, params.headers), 400, /"parameters" must be an object/)

    assertError(await send(good.body, {...good.headers, 'Content-Type': 'application/xml'}), 415, /application\/octet-stream/)
    // Without the header an octet-stream body is not a KServe request, as before.
    assertError(await send(good.body, {'Content-Type': 'application/octet-stream'}), 415, /application\/json/)

    // None of that hurt the server: the well-formed request still works.
    assert.equal((await send(good.body, good.headers)).status, 200)
  })
})
