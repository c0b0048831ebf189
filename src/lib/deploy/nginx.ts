// An nginx load balancer in front of several `ml serve` instances: keepalive upstreams, passive health
// checks, and retries only where they cannot run a request twice. nginx does the balancing; this module
// only writes its configuration from ml.yaml.
import {mkdir, writeFile} from 'node:fs/promises'
import path from 'node:path'
import type {LoadedConfig} from '../config/load.js'
import type {NginxConfig} from '../config/deploy-schema.js'
import {UserError} from '../errors.js'

export interface NginxOptions {
  /** Overrides deploy.nginx.upstreams. */
  upstreams?: string[]
  /** Overrides deploy.nginx.listen. */
  listen?: string
}

export interface NginxFiles {
  /** The http-level part (upstream + server), for /etc/nginx/conf.d/ or an include. */
  site: string
  /** A whole nginx.conf that includes `ml-serve.conf` and runs unprivileged under `nginx -p <dir>`. */
  main: string
  upstreams: string[]
  listen: string
  /** Things the user should change for a clean hand-over when a server stops. */
  notes: string[]
}

export const SITE_FILE = 'ml-serve.conf'

const UPSTREAM = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$|^unix:\/.+$/

function listenDirective(listen: string | number): string {
  const text = String(listen)
  if (/^\d+$/.test(text) || /^unix:\//.test(text) || /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d+$/.test(text)) return text
  throw new UserError(`deploy.nginx.listen "${text}" is not a port, host:port or unix:/path`, {code: 'DEPLOY_INVALID', exit: 'usage'})
}

/** nginx's size syntax for client_max_body_size. */
function size(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)}m` : bytes % 1024 === 0 ? `${bytes / 1024}k` : String(bytes)
}

export function nginxFiles(loaded: LoadedConfig, options: NginxOptions = {}): NginxFiles {
  const nginx: NginxConfig = loaded.config.deploy.nginx
  const serve = loaded.config.serve
  const upstreams = options.upstreams?.length ? options.upstreams : nginx.upstreams
  if (upstreams.length === 0) {
    throw new UserError('no upstreams: the load balancer needs the addresses of the `ml serve` instances', {
      code: 'DEPLOY_NO_UPSTREAMS',
      exit: 'usage',
      suggestions: ['Pass --upstream host:port once per server, or list them in deploy.nginx.upstreams.'],
    })
  }
  for (const u of upstreams) {
    if (!UPSTREAM.test(u)) throw new UserError(`upstream "${u}" is not host:port or unix:/path`, {code: 'DEPLOY_INVALID', exit: 'usage', suggestions: ['Pass --upstream 10.0.0.11:8080 once per server.']})
  }
  const listen = listenDirective(options.listen ?? nginx.listen)
  const notes: string[] = []
  // nginx must give up an idle connection before the server does, or a request written into it just as
  // the server closes it fails with no way to know whether it ran. The server closes idle connections
  // after 5 s (keepAliveTimeout) and when it drains, serve.shutdownDelayMs after SIGTERM; during that
  // delay its answers carry Connection: close, so a shorter keepalive_timeout leaves it no idle
  // connection of nginx's to close.
  const delay = serve.shutdownDelayMs
  const keepaliveMs = Math.max(1, Math.min(4000, Math.floor(delay / 2)))
  if (delay < 1000) {
    notes.push(
      `serve.shutdownDelayMs is ${delay} ms: a stopping server soon closes the connections nginx keeps idle, and a request written into one at that moment fails (502). Start the servers with serve.shutdownDelayMs 5000 or more (--shutdown-delay 5000).`,
    )
  }
  const scheme = serve.tls ? 'https' : 'http'
  // A request may wait requestTimeoutMs in the server: nginx must wait a little longer, or it would
  // answer 504 for requests that the server is still going to answer.
  const readTimeout = Math.ceil(serve.requestTimeoutMs / 1000) + 5
  const site = `# Load balancer for ml serve (written by \`ml deploy nginx\` for model ${loaded.config.name}).
upstream ml_serve {
    # Shared by nginx's worker processes, so that a server marked down is down for all of them.
    zone ml_serve 64k;
    # Fewest open requests first: inference times vary with batch size.
    least_conn;
${upstreams.map((u) => `    server ${u} max_fails=1 fail_timeout=${nginx.failTimeoutSeconds}s;`).join('\n')}
    # Reused connections to the servers (HTTP/1.1 keep-alive), so that no request pays a TCP handshake.
    keepalive 64;
    # Shorter than the servers' idle timeout (5 s) and than half their shutdown delay (${delay} ms).
    keepalive_timeout ${keepaliveMs}ms;
}

server {
    listen ${listen};
    client_max_body_size ${size(serve.maxBodyBytes)};
    client_body_buffer_size ${size(Math.min(serve.maxBodyBytes, 1024 * 1024))};

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_connect_timeout 2s;
    proxy_send_timeout ${readTimeout}s;
    proxy_read_timeout ${readTimeout}s;
    # The whole body is read before a server is chosen, so that it can be sent again on a retry.
    proxy_request_buffering on;

    # A connection refused or reset before the request was sent: no server ran it, so the next one
    # takes it. nginx never resends a POST that a server already received (no "non_idempotent" here),
    # so an inference that may have run is not run twice.
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries ${Math.min(upstreams.length, 3)};
    proxy_next_upstream_timeout ${readTimeout}s;

    location / {
        proxy_pass ${scheme}://ml_serve;
        # 503 from ml serve means the request was refused before it ran (queue full, or the server is
        # stopping): it is safe to send it to another server.
        proxy_intercept_errors on;
        error_page 503 = @refused;
    }

    location @refused {
        proxy_pass ${scheme}://ml_serve;
        # Only a 503 is passed on here ("non_idempotent" lets nginx resend a POST, which a 503 says did
        # not run), and it marks the refusing server down for fail_timeout, so that a stopping server gets
        # no new connections before its port closes. A connection error is not retried here.
        proxy_next_upstream http_503 non_idempotent;
    }
}
`
  const main = `# A whole nginx.conf around ${SITE_FILE}, runnable without root: nginx -p <this folder> -c nginx.conf
worker_processes auto;
pid nginx.pid;
error_log stderr warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    include ${SITE_FILE};
}
`
  return {site, main, upstreams, listen, notes}
}

export interface NginxResult {
  upstreams: string[]
  listen: string
  notes: string[]
  files?: string[]
  out?: string
}

/** `ml deploy nginx`: the site config on stdout, or with `out` both files (and nginx's tmp folder). */
export async function deployNginx(loaded: LoadedConfig, options: NginxOptions & {out?: string}): Promise<{result: NginxResult; text?: string}> {
  const files = nginxFiles(loaded, options)
  const summary = {upstreams: files.upstreams, listen: files.listen, notes: files.notes}
  if (!options.out) return {result: summary, text: files.site}
  try {
    await mkdir(path.join(options.out, 'tmp'), {recursive: true})
    await writeFile(path.join(options.out, SITE_FILE), files.site)
    await writeFile(path.join(options.out, 'nginx.conf'), files.main)
  } catch (error) {
    throw new UserError(`cannot write the nginx configuration into ${options.out}: ${(error as Error).message}`, {code: 'DEPLOY_OUT_UNWRITABLE', exit: 'usage', cause: error})
  }
  return {result: {...summary, out: options.out, files: ['nginx.conf', SITE_FILE]}}
}
