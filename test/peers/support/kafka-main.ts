// A real Kafka broker started by a process of its own, for the test that kills that process: prints
// {"pid": <the JVM's pid>, "address": ...} once the broker is ready, then waits to be killed.
import {RealKafka} from './kafka.js'

const kafka = await RealKafka.start()
process.stdout.write(JSON.stringify({pid: kafka.pid, address: kafka.address()}) + '\n')
process.on('SIGTERM', () => void kafka.stop().then(() => process.exit(0)))
