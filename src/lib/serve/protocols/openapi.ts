// /openapi.json: an OpenAPI 3.1 description of every HTTP endpoint, built from the route tables. Each
// documented operation is placed by routing an example of its path through the tables (first match,
// as requests are), so an operation lands on the route that really answers it; which operations are
// open (no token) and which methods are allowed come from that route. A route no operation reaches,
// or an operation no route answers, is a gap that `documentationGaps` names (and a test refuses).
import type {Route} from './routes.js'

type Method = 'get' | 'post'

interface Operation {
  method: Method
  /** OpenAPI path template: {model}, {version}, {label}. */
  path: string
  summary: string
  tag: 'KServe V2' | 'TF Serving' | 'SageMaker' | 'Operations' | 'Page'
  /** Request body media types, with a schema reference or an inline schema. */
  body?: Record<string, object>
  /** Successful answer: status, description and media types. */
  ok: {status: string; description: string; content?: Record<string, object>}
  /** Other answers that matter to callers (beyond 401, 404 and 5xx, which every closed route has). */
  errors?: Record<string, string>
  query?: Array<{name: string; description: string; schema: object}>
}

const ref = (name: string) => ({$ref: `#/components/schemas/${name}`})
const jsonOf = (name: string) => ({'application/json': {schema: ref(name)}})
const IMAGE_BODY = {'image/*': {schema: {type: 'string', contentMediaType: 'image/*'}}, 'application/octet-stream': {schema: {type: 'string', contentMediaType: 'application/octet-stream'}}}
const TOP_K = {name: 'top_k', description: 'Classes per answer, most likely first (default: all).', schema: {type: 'integer', minimum: 1}}

/** `/v2/models/{model}` and its `/versions/{version}` form, with `suffix` after either. */
function kserveModel(suffix: string, op: Omit<Operation, 'path'>): Operation[] {
  return [{...op, path: `/v2/models/{model}${suffix}`}, {...op, path: `/v2/models/{model}/versions/{version}${suffix}`, summary: `${op.summary} (one version)`}]
}

/** `/v1/models/{model}` with its `/versions/{version}` and `/labels/{label}` forms, `suffix` after each. */
function tfservingModel(suffix: string, op: Omit<Operation, 'path'>): Operation[] {
  return [
    {...op, path: `/v1/models/{model}${suffix}`},
    {...op, path: `/v1/models/{model}/versions/{version}${suffix}`, summary: `${op.summary} (one version)`},
    {...op, path: `/v1/models/{model}/labels/{label}${suffix}`, summary: `${op.summary} (the version a label or alias names)`},
  ]
}

const OPERATIONS: readonly Operation[] = [
  {method: 'get', path: '/', summary: 'A page to try the model: upload or drop an image, see the top classes.', tag: 'Page', ok: {status: '200', description: 'The page (HTML, self-contained).', content: {'text/html': {schema: {type: 'string'}}}}},
  {method: 'get', path: '/openapi.json', summary: 'This description.', tag: 'Page', ok: {status: '200', description: 'OpenAPI 3.1 document.', content: {'application/json': {schema: {type: 'object'}}}}},
  {method: 'get', path: '/healthz', summary: 'Liveness.', tag: 'Operations', ok: {status: '200', description: 'The process is up.', content: jsonOf('Status')}},
  {method: 'get', path: '/livez', summary: 'Liveness (Kubernetes name).', tag: 'Operations', ok: {status: '200', description: 'The process is up.', content: jsonOf('Status')}},
  {method: 'get', path: '/readyz', summary: 'Readiness: every served model has an available version.', tag: 'Operations', ok: {status: '200', description: 'Ready.', content: jsonOf('Status')}, errors: {'503': 'Not ready (loading, or shutting down).'}},
  {method: 'get', path: '/metrics', summary: 'Prometheus metrics (ml_serve_*, Triton nv_inference_*, process).', tag: 'Operations', ok: {status: '200', description: 'Prometheus text exposition.', content: {'text/plain': {schema: {type: 'string'}}}}},
  {method: 'get', path: '/v2/health/live', summary: 'KServe V2 server liveness.', tag: 'KServe V2', ok: {status: '200', description: 'Live.', content: {'application/json': {schema: {type: 'object', properties: {live: {type: 'boolean'}}}}}}},
  {method: 'get', path: '/v2/health/ready', summary: 'KServe V2 server readiness.', tag: 'KServe V2', ok: {status: '200', description: 'Ready.', content: {'application/json': {schema: {type: 'object', properties: {ready: {type: 'boolean'}}}}}}, errors: {'400': 'Not ready.'}},
  ...kserveModel('/ready', {method: 'get', summary: 'KServe V2 model readiness.', tag: 'KServe V2', ok: {status: '200', description: 'Ready.', content: jsonOf('ModelReady')}, errors: {'400': 'Known but not ready.'}}),
  {method: 'get', path: '/v2', summary: 'KServe V2 server metadata (name, version, extensions).', tag: 'KServe V2', ok: {status: '200', description: 'Server metadata.', content: jsonOf('ServerMetadata')}},
  {method: 'post', path: '/v2/repository/index', summary: 'Every model version the server knows, with its state (Triton).', tag: 'KServe V2', body: {'application/json': {schema: {type: 'object'}}}, ok: {status: '200', description: 'The index.', content: jsonOf('RepositoryIndex')}},
  ...kserveModel('/infer', {
    method: 'post',
    summary: 'KServe V2 inference: FP32 tensors or BYTES elements holding encoded images, as JSON or binary tensor data; outputs[].parameters.classification gives the top classes. Without a version, a canary split may choose it: model_version says which answered.',
    tag: 'KServe V2',
    body: {'application/json': {schema: ref('InferRequest')}, 'application/octet-stream': {schema: {type: 'string', description: 'The JSON request, then binary tensor data (header Inference-Header-Content-Length).'}}},
    ok: {status: '200', description: 'The outputs.', content: {'application/json': {schema: ref('InferResponse')}, 'application/octet-stream': {schema: {type: 'string'}}}},
    errors: {'400': 'A malformed request or image.', '413': 'Body over serve.maxBodyBytes.', '503': 'Queue full or loading: retry later (Retry-After).', '504': 'Not answered within serve.requestTimeoutMs.'},
  }),
  ...kserveModel('', {method: 'get', summary: 'KServe V2 model metadata (inputs, outputs, versions).', tag: 'KServe V2', ok: {status: '200', description: 'Model metadata.', content: jsonOf('ModelMetadata')}}),
  ...tfservingModel('/metadata', {method: 'get', summary: 'TF Serving model metadata (signature_def).', tag: 'TF Serving', ok: {status: '200', description: 'Signature.', content: {'application/json': {schema: {type: 'object'}}}}}),
  ...tfservingModel('', {method: 'get', summary: 'TF Serving model version status.', tag: 'TF Serving', ok: {status: '200', description: 'Status of each version.', content: {'application/json': {schema: {type: 'object', properties: {model_version_status: {type: 'array', items: {type: 'object'}}}}}}}}),
  ...tfservingModel(':predict', {
    method: 'post',
    summary: 'TF Serving predict: "instances" (rows) or "inputs" (columns) of {"b64": image} or preprocessed numbers.',
    tag: 'TF Serving',
    body: jsonOf('PredictRequest'),
    ok: {status: '200', description: 'Probabilities per image (header X-Model-Version: the version that answered).', content: {'application/json': {schema: {type: 'object'}}}},
    errors: {'400': 'A malformed request or image.'},
  }),
  ...tfservingModel(':classify', {
    method: 'post',
    summary: 'TF Serving classify: JSON examples, or the image itself as the body (image/*).',
    tag: 'TF Serving',
    body: {'application/json': {schema: {type: 'object', properties: {examples: {type: 'array', items: {type: 'object'}}}, required: ['examples']}}, ...IMAGE_BODY},
    query: [TOP_K],
    ok: {status: '200', description: '[label, score] pairs per image, most likely first.', content: jsonOf('ClassifyResponse')},
    errors: {'400': 'A malformed request or image.', '415': 'Neither JSON nor an image.'},
  }),
  {method: 'post', path: '/v1/models/{model}:regress', summary: 'TF Serving regress: these models are classifiers, so always 400 (other verbs: 404).', tag: 'TF Serving', ok: {status: '400', description: 'No regression signature.', content: jsonOf('Error')}},
  {method: 'get', path: '/ping', summary: 'SageMaker health check.', tag: 'SageMaker', ok: {status: '200', description: 'Ready.', content: jsonOf('Status')}, errors: {'503': 'Not ready.'}},
  {
    method: 'post',
    path: '/invocations',
    summary: 'SageMaker inference: an image (image/*) classified, or a TF Serving predict request (application/json), for the one served model (or ML_SAGEMAKER_MODEL).',
    tag: 'SageMaker',
    body: {...IMAGE_BODY, ...jsonOf('PredictRequest')},
    query: [TOP_K],
    ok: {status: '200', description: 'The classify or predict answer.', content: {'application/json': {schema: {type: 'object'}}}},
    errors: {'400': 'A malformed request or image.', '415': 'Neither JSON nor an image.'},
  },
]

const SCHEMAS = {
  Error: {type: 'object', properties: {error: {type: 'string'}}, required: ['error']},
  Status: {type: 'object', properties: {status: {type: 'string'}}},
  ModelReady: {type: 'object', properties: {name: {type: 'string'}, ready: {type: 'boolean'}}},
  ServerMetadata: {type: 'object', properties: {name: {type: 'string'}, version: {type: 'string'}, extensions: {type: 'array', items: {type: 'string'}}}},
  RepositoryIndex: {type: 'array', items: {type: 'object', properties: {name: {type: 'string'}, version: {type: 'string'}, state: {type: 'string', enum: ['READY', 'LOADING', 'UNLOADING', 'UNAVAILABLE']}, reason: {type: 'string'}}}},
  Tensor: {
    type: 'object',
    properties: {
      name: {type: 'string'},
      datatype: {type: 'string', enum: ['FP32', 'BYTES']},
      shape: {type: 'array', items: {type: 'integer', minimum: 0}},
      data: {type: 'array'},
      parameters: {type: 'object'},
    },
    required: ['name', 'datatype', 'shape'],
  },
  InferRequest: {
    type: 'object',
    properties: {
      id: {type: 'string'},
      inputs: {type: 'array', items: ref('Tensor'), minItems: 1},
      outputs: {type: 'array', items: {type: 'object', properties: {name: {type: 'string'}, parameters: {type: 'object', properties: {classification: {type: 'integer', minimum: 1}, binary_data: {type: 'boolean'}}}}, required: ['name']}},
      parameters: {type: 'object', properties: {binary_data_output: {type: 'boolean'}}},
    },
    required: ['inputs'],
  },
  InferResponse: {type: 'object', properties: {model_name: {type: 'string'}, model_version: {type: 'string'}, id: {type: 'string'}, outputs: {type: 'array', items: ref('Tensor')}}, required: ['model_name', 'outputs']},
  ModelMetadata: {type: 'object', properties: {name: {type: 'string'}, versions: {type: 'array', items: {type: 'string'}}, platform: {type: 'string'}, inputs: {type: 'array', items: {type: 'object'}}, outputs: {type: 'array', items: {type: 'object'}}}},
  PredictRequest: {type: 'object', properties: {signature_name: {type: 'string'}, instances: {type: 'array'}, inputs: {}}},
  ClassifyResponse: {type: 'object', properties: {results: {type: 'array', items: {type: 'array', items: {type: 'array', prefixItems: [{type: 'string'}, {type: 'number'}]}}}}},
}

const PARAMETERS: Record<string, {description: string; schema: object}> = {
  model: {description: 'Model name (a folder of the repository).', schema: {type: 'string'}},
  version: {description: 'Version number.', schema: {type: 'string', pattern: '^[1-9][0-9]*$'}},
  label: {description: 'Version label (serve.models[].labels) or alias (`ml models alias`).', schema: {type: 'string'}},
}

/** An example of a path template, to route through the tables. */
export function examplePath(template: string): string {
  return template.replace('{model}', 'm').replace('{version}', '1').replace('{label}', 'stable')
}

/** The route that answers a path: the first whose pattern matches, as the router does. */
function routeOf(routes: readonly Route[], path: string): Route | undefined {
  return routes.find((r) => r.pattern.test(path))
}

/** Operations no route answers (with the method), and routes no operation reaches. */
export function documentationGaps(routes: readonly Route[]): {unrouted: string[]; undocumented: string[]} {
  const reached = new Set<Route>()
  const unrouted: string[] = []
  for (const op of OPERATIONS) {
    const route = routeOf(routes, examplePath(op.path))
    if (route === undefined || (route.methods !== undefined && !route.methods.includes(op.method.toUpperCase()))) unrouted.push(`${op.method.toUpperCase()} ${op.path}`)
    else reached.add(route)
  }
  const undocumented = routes.filter((r) => !reached.has(r)).map((r) => `${r.methods?.join(',') ?? '*'} ${r.pattern.source}`)
  return {unrouted, undocumented}
}

/** Every documented operation, as the route tables answer it. */
export function openApiDocument(routes: readonly Route[], server: {name: string; version: string}, auth: boolean): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  // Route order first, so that the document reads like the tables.
  const ordered = [...OPERATIONS].map((op) => ({op, index: routes.indexOf(routeOf(routes, examplePath(op.path))!)})).filter((x) => x.index >= 0).sort((a, b) => a.index - b.index)
  for (const {op, index} of ordered) {
    const route = routes[index]!
    const names = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!)
    const responses: Record<string, unknown> = {[op.ok.status]: {description: op.ok.description, ...(op.ok.content ? {content: op.ok.content} : {})}}
    for (const [status, description] of Object.entries(op.errors ?? {})) responses[status] ??= {description, content: jsonOf('Error')}
    if (!route.open && auth) responses['401'] ??= {description: 'Missing or wrong bearer token (serve.auth).', content: jsonOf('Error')}
    if (names.length > 0) responses['404'] ??= {description: 'Unknown model, version or label.', content: jsonOf('Error')}
    paths[op.path] ??= {}
    paths[op.path]![op.method] = {
      operationId: `${op.method}${op.path.replace(/[^a-zA-Z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}` || 'getRoot',
      summary: op.summary,
      tags: [op.tag],
      ...(route.open ? {security: []} : {}),
      ...(names.length || op.query
        ? {parameters: [...names.map((name) => ({name, in: 'path', required: true, ...PARAMETERS[name]})), ...(op.query ?? []).map((q) => ({...q, in: 'query', required: false}))]}
        : {}),
      ...(op.body ? {requestBody: {required: true, content: op.body}} : {}),
      responses,
    }
  }
  return {
    openapi: '3.1.0',
    info: {
      title: `${server.name} serve`,
      version: server.version,
      description: 'Image classifier serving: KServe V2 (Open Inference Protocol), TF Serving REST and SageMaker endpoints, health checks and Prometheus metrics.',
    },
    ...(auth ? {security: [{bearer: []}]} : {}),
    components: {schemas: SCHEMAS, ...(auth ? {securitySchemes: {bearer: {type: 'http', scheme: 'bearer', description: 'The token in the environment variable serve.auth.tokenEnv names.'}}} : {})},
    paths,
  }
}
