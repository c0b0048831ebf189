// `ml ingest publish`: seeds a Kafka topic from class folders in the format kafka sources read by
// default, for users filling a topic and for tests and benchmarks.
import {Args, Flags} from '@oclif/core'
import {existsSync} from 'node:fs'
import type {KafkaConnection, KafkaOrigin} from '../../lib/data/kafka-client.js'
import {MlCommand} from '../../lib/ui/command.js'
import {UserError} from '../../lib/errors.js'

export default class IngestPublish extends MlCommand {
  static override summary = 'Publish a folder of class sub-folders to a Kafka topic or a Kinesis stream.'
  static override description = `Every image file under <folder>/<class>/ becomes one message: the value is the file's bytes, the header \`label\` (see --label-header) is the class folder's name and the key is the file's path under <folder>. That is what a kafka source with the default format: image reads. Files directly in <folder> are skipped (they have no class). Without --brokers, the brokers (and ssl/sasl) of the config's first kafka source are used.

${MlCommand.exitCodesHelp}`

  static override examples = [
    '<%= config.bin %> ingest publish images/ --topic raw-images --brokers localhost:9092',
    '<%= config.bin %> ingest publish images/ --topic raw-images --partitions 6 --json',
    '<%= config.bin %> ingest publish images/ --to kinesis --stream raw-images --shards 2',
  ]

  static override args = {
    folder: Args.string({description: 'Folder with one sub-folder per class.', required: true}),
  }

  static override flags = {
    to: Flags.string({summary: 'Where to publish: kafka (a topic) or kinesis (a data stream, records as {label, image} JSON envelopes).', options: ['kafka', 'kinesis'], default: 'kafka'}),
    topic: Flags.string({char: 't', summary: 'Topic to publish to (--to kafka).'}),
    stream: Flags.string({summary: 'Kinesis data stream to publish to (--to kinesis).'}),
    shards: Flags.integer({summary: 'Create the Kinesis stream with this many shards if it does not exist.', min: 1}),
    brokers: Flags.string({summary: 'Bootstrap brokers, comma-separated host:port.', env: 'ML_KAFKA_BROKERS'}),
    partitions: Flags.integer({summary: 'Create the topic with this many partitions if it does not exist.', min: 1}),
    'label-header': Flags.string({summary: 'Header that carries the class name.', default: 'label'}),
    'client-id': Flags.string({summary: 'Kafka client id.', default: 'ml-publish'}),
  }

  async run() {
    const {args, flags} = await this.parse(IngestPublish)
    if (!existsSync(args.folder)) {
      throw new UserError(`folder ${args.folder} does not exist`, {code: 'SOURCE_NOT_FOUND', exit: 'data'})
    }
    if (flags.to === 'kinesis') return this.toKinesis(args.folder, flags.stream, flags.shards)
    if (flags.topic === undefined) throw new UserError('--topic is needed to publish to Kafka', {code: 'USAGE', exit: 'usage', suggestions: ['Pass --topic <name>, or --to kinesis --stream <name>.']})
    const {connection, origin} = await this.connection(flags.brokers, flags.config, flags['client-id'])
    const {publishFolder} = await import('../../lib/data/kafka-publish.js')
    const interrupt = this.abortOnSignals()
    try {
      const summary = await publishFolder({
        folder: args.folder,
        topic: flags.topic,
        connection,
        origin,
        labelHeader: flags['label-header'],
        ...(flags.partitions === undefined ? {} : {partitions: flags.partitions}),
        signal: interrupt.signal,
      })
      if (interrupt.signal.aborted) {
        throw new UserError(`publish interrupted after ${summary.published} message(s)`, {code: 'INTERRUPTED', exit: 'interrupted'})
      }
      this.say(`published ${summary.published} image(s) of ${summary.classes} class(es) to ${summary.topic} (${(summary.bytes / 1e6).toFixed(1)} MB, ${summary.messagesPerSec.toFixed(0)} msg/s)`)
      if (summary.skipped > 0) this.say(`skipped ${summary.skipped} file(s) directly in ${args.folder} (no class folder)`)
      return summary
    } finally {
      interrupt.release()
    }
  }

  private async toKinesis(folder: string, stream: string | undefined, shards: number | undefined) {
    if (stream === undefined) throw new UserError('--stream is needed with --to kinesis', {code: 'USAGE', exit: 'usage'})
    const {publishFolderToKinesis} = await import('../../lib/data/kinesis-publish.js')
    const interrupt = this.abortOnSignals()
    try {
      const summary = await publishFolderToKinesis({folder, stream, ...(shards === undefined ? {} : {shards}), signal: interrupt.signal})
      if (interrupt.signal.aborted) throw new UserError(`publish interrupted after ${summary.published} record(s)`, {code: 'INTERRUPTED', exit: 'interrupted'})
      this.say(`published ${summary.published} image(s) of ${summary.classes} class(es) to Kinesis stream ${summary.stream} (${(summary.bytes / 1e6).toFixed(1)} MB, ${summary.recordsPerSec.toFixed(0)} records/s)`)
      if (summary.skipped > 0) this.say(`skipped ${summary.skipped} file(s) directly in ${folder} (no class folder)`)
      if (summary.tooLarge > 0) this.say(`skipped ${summary.tooLarge} file(s) too large for a Kinesis record (1 MiB)`)
      return summary
    } finally {
      interrupt.release()
    }
  }

  private async connection(brokers: string | undefined, configFile: string, clientId: string): Promise<{connection: KafkaConnection; origin: KafkaOrigin}> {
    if (brokers !== undefined) {
      const list = brokers.split(',').map((b) => b.trim()).filter((b) => b !== '')
      if (list.length === 0) throw new UserError('--brokers: expected host:port[,host:port...]', {code: 'USAGE', exit: 'usage'})
      return {connection: {brokers: list, clientId}, origin: {key: '--brokers'}}
    }
    if (!existsSync(configFile)) {
      throw new UserError(`--brokers is needed (there is no ${configFile} to take a kafka source's brokers from)`, {code: 'USAGE', exit: 'usage'})
    }
    const loaded = await this.loadConfig(configFile)
    const index = loaded.config.data.sources.findIndex((s) => s.type === 'kafka')
    const source = loaded.config.data.sources[index]
    if (!source || source.type !== 'kafka') {
      throw new UserError(`--brokers is needed (${configFile} has no kafka source)`, {code: 'USAGE', exit: 'usage'})
    }
    return {
      connection: {brokers: source.brokers, clientId, ...(source.ssl === undefined ? {} : {ssl: source.ssl}), ...(source.sasl ? {sasl: source.sasl} : {})},
      // ssl files are relative to the config file, as they are for `ml ingest`.
      origin: {key: `data.sources[${index}]`, baseDir: loaded.baseDir},
    }
  }
}
