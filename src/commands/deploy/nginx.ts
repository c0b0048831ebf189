import {Flags} from '@oclif/core'
import {MlCommand} from '../../lib/ui/command.js'

export default class DeployNginx extends MlCommand {
  static override summary = 'Write an nginx load balancer configuration for several `ml serve` instances.'
  static override description = `Writes an nginx configuration that spreads requests over the given \`ml serve\` instances: least-connections balancing, keep-alive connections to the servers, passive health checks (a server that refuses a connection rests for deploy.nginx.failTimeoutSeconds), a request whose connection was refused or reset before it was sent retried on another server, a 503 (refused before running: queue full or shutting down) retried once on another server, and never a retry of a request that a server may have run. Timeouts and the body limit follow serve.requestTimeoutMs and serve.maxBodyBytes.

Without --out the site configuration (an upstream and a server block, for /etc/nginx/conf.d/) goes to stdout. With --out DIR, DIR gets that file as ml-serve.conf plus an nginx.conf around it that runs without root: nginx -p DIR -c nginx.conf.

Start each server with serve.shutdownDelayMs of a few seconds so that a server being stopped keeps answering while nginx stops sending to it.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> deploy nginx --upstream 10.0.0.11:8080 --upstream 10.0.0.12:8080 > /etc/nginx/conf.d/ml-serve.conf',
    '<%= config.bin %> deploy nginx --upstream 127.0.0.1:8081 --upstream 127.0.0.1:8082 --listen 8080 --out lb/ && nginx -p lb/ -c nginx.conf',
  ]

  static override flags = {
    upstream: Flags.string({summary: 'An `ml serve` address, host:port (repeatable; overrides deploy.nginx.upstreams).', multiple: true}),
    listen: Flags.string({summary: 'What nginx listens on: port, host:port or unix:/path (overrides deploy.nginx.listen).'}),
    out: Flags.string({summary: 'Write nginx.conf and ml-serve.conf into this folder instead of printing the site configuration.'}),
  }

  async run() {
    const {flags} = await this.parse(DeployNginx)
    const loaded = await this.loadConfig(flags.config)
    const {deployNginx} = await import('../../lib/deploy/nginx.js')
    const {result, text} = await deployNginx(loaded, {upstreams: flags.upstream, listen: flags.listen, out: flags.out})
    if (text !== undefined && !this.jsonEnabled()) process.stdout.write(text)
    for (const note of result.notes) this.logToStderr(`note: ${note}`)
    if (result.out) this.say(`wrote ${result.files!.join(' and ')} into ${result.out} (${result.upstreams.length} servers, listening on ${result.listen}): nginx -p ${result.out} -c nginx.conf`)
    return text !== undefined && this.jsonEnabled() ? {...result, config: text} : result
  }
}
