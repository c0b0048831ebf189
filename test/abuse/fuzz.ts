// Seeded malformed requests for every endpoint of `ml serve`, and the clients that send them: the
// fuzz of `npm run test:abuse`, kept apart so that a memory investigation can replay the same traffic.
import http from 'node:http'
import net from 'node:net'

export type Random = () => number

export interface FuzzRequest {
  kind: string
  method: string
  path: string
  headers: Record<string, string>
  body?: Buffer
}

export type Outcome = {status: number} | {closed: string}

const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)]!
const int = (random: Random, below: number) => Math.floor(random() * below)

function randomBytes(random: Random, n: number): Buffer {
  const out = Buffer.alloc(n)
  for (let i = 0; i < n; i++) out[i] = int(random, 256)
  return out
}

function randomText(random: Random, n: number): string {
  return Array.from({length: n}, () => String.fromCharCode(pick(random, [int(random, 0x80), int(random, 0xd000), 0, 0x2f, 0x3a, 0x25]))).join('')
}

const nest = (depth: number, inner: string) => '['.repeat(depth) + inner + ']'.repeat(depth)

/** Every endpoint, and paths that look like them. */
function fuzzPath(random: Random): string {
  const model = pick(random, ['digits', 'digits', 'nope', encodeURIComponent(randomText(random, 1 + int(random, 400))), '%E0%A4%A', '..%2F..', 'digits%00'])
  const version = pick(random, ['', '', '/versions/1', '/versions/0', '/versions/-1', '/versions/99999999999999999999', `/versions/${encodeURIComponent(randomText(random, 8))}`])
  return pick(random, [
    `/v2/models/${model}${version}/infer`, `/v2/models/${model}${version}/infer`, `/v2/models/${model}${version}/infer`,
    `/v2/models/${model}${version}`, `/v2/models/${model}${version}/ready`, '/v2', '/v2/', '/v2/health/live', '/v2/health/ready', '/v2/repository/index',
    `/v1/models/${model}`, `/v1/models/${model}/metadata`, `/v1/models/${model}:predict`, `/v1/models/${model}:predict`, `/v1/models/${model}:classify`,
    `/v1/models/${model}/labels/${encodeURIComponent(randomText(random, 5))}:predict`, `/v1/models/${model}:regress`, `/v1/models/${model}:${randomText(random, 3).replace(/[^a-z]/gi, 'x')}`,
    '/healthz', '/readyz', '/livez', '/metrics', `/${encodeURIComponent(randomText(random, 50))}`, '/v2/models/', '/v1/models//x:predict', '/%', '/v2/models/digits/infer?top_k=-1', `/v1/models/digits:classify?top_k=${pick(random, ['0', '1', '3', 'x', '1e9', '999999'])}`,
  ])
}

/** JSON bodies that are almost right, and some that are not JSON at all. */
function fuzzBody(random: Random, digit: string): {kind: string; body: Buffer; type: string} {
  const datatype = pick(random, ['FP32', 'FP32', 'BYTES', 'BYTES', 'FP16', 'INT8', 'UINT8', 'BOOL', 'fp32', '', null, 7])
  const shape = pick(random, [[1], [1, 1], [1, 28, 28, 1], [2, 28, 28, 1], [0], [-1], [1e9], [1.5], ['1'], [], [1, 28, 28, 1, 1], [4096], null])
  const floats = () => Array.from({length: pick(random, [784, 783, 785, 0, 10])}, () => pick(random, [random(), 0, -1, 1e38, 255, 0.5]))
  const b64 = () => pick(random, [digit, digit.slice(0, int(random, digit.length)), '', '!!!!', 'AAAA', randomBytes(random, int(random, 3000)).toString('base64'), `${digit}====`, Buffer.from('\x89PNG\r\n\x1a\n' + randomText(random, 200)).toString('base64')])
  const data = () => pick<unknown>(random, [floats(), [b64()], [b64(), b64()], [[b64()]], JSON.parse(nest(1 + int(random, 60), '0')), 'data', null, {}, [null], [true], [[1, 2], 3]])
  const kserve = () => ({
    id: pick<unknown>(random, [undefined, 'id', 7, null]),
    inputs: pick<unknown>(random, [[{name: pick(random, ['image', 'image', 'x', '', null]), shape, datatype, data: data()}], [], null, 'inputs', [{name: 'image'}], [{name: 'image', shape, datatype, data: data()}, {name: 'image', shape, datatype, data: data()}]]),
    outputs: pick<unknown>(random, [undefined, undefined, [{name: 'probabilities', parameters: {classification: pick(random, [1, 3, 0, -1, 'x', 1e9])}}], [{name: 'nope'}], [], 'x', [{name: 'probabilities', parameters: {binary_data: pick(random, [true, 'yes'])}}]]),
    parameters: pick<unknown>(random, [undefined, undefined, {binary_data_output: true}, 'x', {binary_data_output: 3}]),
  })
  const instance = () => pick<unknown>(random, [{b64: b64()}, {b64: b64()}, {image: {b64: b64()}}, {image: floats()}, floats(), JSON.parse(nest(1 + int(random, 40), '1')), {b64: 7}, {}, null, 'x'])
  const tf = () => pick<unknown>(random, [
    {instances: Array.from({length: pick(random, [1, 1, 2, 0, 40])}, instance)},
    {inputs: pick<unknown>(random, [{image: [instance()]}, [instance()], {x: 1}, 7])},
    {instances: [instance()], inputs: [instance()]},
    {instances: [instance()], signature_name: pick(random, ['serving_default', 'other', 7])},
    {examples: Array.from({length: pick(random, [1, 2, 0])}, () => pick<unknown>(random, [{image: {b64: b64()}}, {'image/encoded': [{b64: b64()}]}, {a: 1, b: 2}, 'x']))},
  ])
  const json = (value: unknown) => Buffer.from(JSON.stringify(value))
  const category = pick(random, ['kserve', 'kserve', 'tf', 'tf', 'malformed', 'deep', 'nonfinite', 'raw', 'binary', 'large'])
  switch (category) {
    case 'kserve':
      return {kind: 'kserve', body: json(kserve()), type: pick(random, ['application/json', 'application/json', 'text/plain', '', 'application/xml', 'multipart/form-data', 'application/json; charset=latin1'])}
    case 'tf':
      return {kind: 'tf', body: json(tf()), type: pick(random, ['application/json', 'application/x-www-form-urlencoded', '', 'image/png'])}
    case 'malformed': {
      const valid = JSON.stringify(kserve())
      const body = pick(random, [valid.slice(0, int(random, valid.length)), '{', '[', 'null', '"x"', '1e999', `\uFEFF${valid}`, randomText(random, 300), '{"inputs": [}', valid.replace(/"/g, "'"), ''])
      return {kind: 'malformed', body: Buffer.from(body), type: 'application/json'}
    }
    case 'deep':
      return {kind: 'deep', body: Buffer.from(pick(random, [`{"inputs":[{"name":"image","shape":[1,28,28,1],"datatype":"FP32","data":${nest(int(random, 200_000), '0')}}]}`, `{"instances":${nest(int(random, 200_000), '1')}}`, `${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}`])), type: 'application/json'}
    case 'nonfinite':
      return {kind: 'nonfinite', body: Buffer.from(`{"inputs":[{"name":"image","shape":[1,28,28,1],"datatype":"FP32","data":[${Array.from({length: 784}, (_, i) => (i === 5 ? pick(random, ['1e999', '-1e999', '1e39', 'NaN']) : '0')).join(',')}]}]}`), type: 'application/json'}
    case 'raw':
      return {kind: 'raw', body: pick(random, [Buffer.from(digit, 'base64'), randomBytes(random, int(random, 5000)), Buffer.alloc(0), Buffer.from(digit, 'base64').subarray(0, 60)]), type: pick(random, ['image/png', 'image/jpeg', 'application/octet-stream', 'image/x-nonsense'])}
    case 'binary': {
      const head = json(kserve())
      return {kind: 'binary', body: Buffer.concat([head, randomBytes(random, int(random, 4000))]), type: pick(random, ['application/octet-stream', 'application/json'])}
    }
    default:
      return {kind: 'large', body: Buffer.alloc(300 * 1024 + int(random, 100_000), 0x20), type: 'application/json'}
  }
}

export function fuzzRequest(random: Random, digit: string): FuzzRequest {
  const method = pick(random, ['POST', 'POST', 'POST', 'GET', 'GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'])
  const headers: Record<string, string> = {}
  let kind = 'no-body'
  let body: Buffer | undefined
  if (method === 'POST' || method === 'PUT' || random() < 0.05) {
    const fuzzed = fuzzBody(random, digit)
    kind = fuzzed.kind
    body = fuzzed.body
    if (fuzzed.type) headers['Content-Type'] = fuzzed.type
    if (fuzzed.kind === 'binary' || random() < 0.05) headers['Inference-Header-Content-Length'] = pick(random, [String(int(random, body.length + 10)), '0x10', '-1', '1e3', ' ', String(body.length)])
  }
  if (random() < 0.1) headers.Authorization = pick(random, ['Bearer', 'Bearer x', 'Basic eDp5', randomText(random, 30).replace(/[^\x20-\x7e]/g, 'a')])
  if (random() < 0.03) headers['X-Padding'] = 'a'.repeat(int(random, 12_000))
  if (random() < 0.03) headers.Accept = randomText(random, 40).replace(/[^\x20-\x7e]/g, 'b')
  return {kind, method, path: fuzzPath(random), headers, body}
}

export function send(url: string, agent: http.Agent, r: FuzzRequest): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = http.request(url + r.path, {method: r.method, headers: r.headers, agent}, (res) => {
      res.resume()
      res.on('end', () => resolve({status: res.statusCode!}))
      res.on('error', (error) => resolve({closed: error.message}))
    })
    req.on('error', (error) => resolve({closed: (error as NodeJS.ErrnoException).code ?? error.message}))
    req.end(r.body)
  })
}

/** A client that sends part of its request and then nothing: the server must cut it off. */
export function slowSender(port: number, random: Random): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    let answer = ''
    socket.on('data', (d) => (answer += d.toString('latin1')))
    socket.on('error', () => {})
    socket.on('close', () => resolve(answer.split('\r\n')[0] ?? ''))
    socket.on('connect', () => {
      socket.write(pick(random, [
        'POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n',
        'POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inputs":',
        'GET /metr',
        'POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"ins\r\n',
      ]))
    })
  })
}

