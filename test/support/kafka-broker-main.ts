// The test Kafka broker as its own process, for tests whose clients get killed; prints {"port":N}
// when ready. Args: [--port N] [--topic name:partitions]... [--delay Api:ms]...
import {KafkaBroker, type ApiName} from './kafka-broker.js'

const args = process.argv.slice(2)
let port = 0
const topics: Array<[string, number]> = []
const delays: Partial<Record<ApiName, number>> = {}
for (let i = 0; i < args.length; i++) {
  const arg = args[i]
  const value = args[i + 1]
  if (arg === '--port' && value !== undefined) {
    port = Number(value)
    i++
  } else if (arg === '--delay' && value !== undefined) {
    const [api, ms] = value.split(':')
    delays[api as ApiName] = Number(ms)
    i++
  } else if (arg === '--topic' && value !== undefined) {
    const [name, partitions] = value.split(':')
    topics.push([name!, Number(partitions ?? 1)])
    i++
  } else {
    process.stderr.write(`unknown argument ${arg}\n`)
    process.exit(2)
  }
}

const broker = await KafkaBroker.create({port, delays})
for (const [name, partitions] of topics) broker.createTopic(name, partitions)
process.stdout.write(JSON.stringify({port: broker.port}) + '\n')

const shutdown = () => {
  broker.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  )
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
// The parent's death closes our stdin: do not outlive a test run that crashed.
process.stdin.on('end', shutdown)
process.stdin.resume()
