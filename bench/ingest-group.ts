// Ingest scaled out, as one JSON object: the same MNIST digits on a Kafka topic ingested into one
// dataset store by one `ml ingest` process and by three in one consumer group (shared writers, see
// docs/scale.md), timed from the processes' start to the last one's exit (start-up, group joins and
// rebalances included). Rounds alternate the order; the ratio is the median of the per-round ratios.
// Args: [--quick] (fewer digits and rounds) [--images N] [--rounds N] [--members N].
import {spawn} from 'node:child_process'
import {once} from 'node:events'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {performance} from 'node:perf_hooks'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'
import {Kafka, logLevel} from 'kafkajs'
import {stringify} from 'yaml'
import {mnistPng, readMnist} from '../src/lib/data/mnist.js'
import {loadSplit, readManifest} from '../src/lib/data/store.js'

const args = process.argv.slice(2)
const option = (name: string, fallback: number) => {
  const i = args.indexOf(name)
  return i === -1 ? fallback : Number(args[i + 1])
}
const QUICK = args.includes('--quick')
const IMAGES = option('--images', QUICK ? 4000 : 12_000)
const ROUNDS = option('--rounds', QUICK ? 1 : 3)
const MEMBERS = option('--members', 3)
const PARTITIONS = 6
const TOPIC = 'digits'
const TARGET_RATIO = 1.5

const here = path.dirname(fileURLToPath(import.meta.url))
const BIN = path.join(here, '..', '..', 'bin', 'run.cjs')

async function startBroker(): Promise<{address: string; stop: () => Promise<void>}> {
  const main = path.join(here, '..', 'test', 'support', 'kafka-broker-main.js')
  // Its own process, as a broker is: it does not share an ingest's event loop.
  const child = spawn(process.execPath, [main, '--topic', `${TOPIC}:${PARTITIONS}`], {stdio: ['pipe', 'pipe', 'inherit']})
  const [line] = (await once(createInterface({input: child.stdout!}), 'line')) as [string]
  const {port} = JSON.parse(line) as {port: number}
  return {
    address: `127.0.0.1:${port}`,
    stop: async () => {
      child.kill('SIGTERM')
      await once(child, 'exit')
    },
  }
}

async function produceDigits(address: string): Promise<void> {
  const sample = await readMnist('train', 0, IMAGES)
  const kafka = new Kafka({brokers: [address], clientId: 'bench', logLevel: logLevel.NOTHING})
  const producer = kafka.producer({allowAutoTopicCreation: false})
  await producer.connect()
  for (let i = 0; i < sample.count; i += 500) {
    const messages = []
    for (let j = i; j < Math.min(sample.count, i + 500); j++) messages.push({value: await mnistPng(sample, j), headers: {label: String(sample.labels[j])}})
    await producer.send({topic: TOPIC, messages, acks: -1})
  }
  await producer.disconnect()
}

interface Run {
  members: number
  seconds: number
  imagesPerSec: number
  stored: number
  distinct: number
  versions: number
}

/** `members` processes of group `group` ingest the whole topic into a fresh store; every one reads until the end offsets it saw at start. */
async function ingest(work: string, address: string, members: number, group: string): Promise<Run> {
  const store = path.join(work, group)
  const config = path.join(work, `${group}.yaml`)
  await writeFile(
    config,
    stringify({
      data: {
        sources: [{type: 'kafka', brokers: [address], topics: [TOPIC], groupId: group, fromBeginning: true, sessionTimeoutMs: 6000}],
        image: {width: 28, height: 28, channels: 1},
        store,
        shardSize: 1000,
      },
    }),
  )
  const started = performance.now()
  const runs = Array.from({length: members}, () => {
    const child = spawn(process.execPath, [BIN, 'ingest', '--config', config, '--json'], {stdio: ['ignore', 'ignore', 'pipe'], env: {...process.env, NO_COLOR: '1'}})
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    return once(child, 'exit').then(([code]) => {
      if (code !== 0) throw new Error(`ml ingest exited ${code}: ${stderr}`)
    })
  })
  await Promise.all(runs)
  const seconds = (performance.now() - started) / 1000
  const manifest = await readManifest(store)
  const keys: string[] = []
  for (const split of ['train', 'validation', 'test'] as const) keys.push(...(await loadSplit(store, split, manifest)).keys)
  await rm(store, {recursive: true, force: true})
  return {members, seconds, imagesPerSec: IMAGES / seconds, stored: manifest.total, distinct: new Set(keys).size, versions: manifest.version}
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const round2 = (x: number) => Math.round(x * 100) / 100

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'ml-bench-ingest-group-'))
  const broker = await startBroker()
  try {
    await produceDigits(broker.address)
    const rounds: Array<{one: Run; many: Run; ratio: number}> = []
    for (let r = 0; r < ROUNDS; r++) {
      // Every run has its own group, so each reads the whole topic from the beginning.
      const order = r % 2 === 0 ? [1, MEMBERS] : [MEMBERS, 1]
      const done: Record<number, Run> = {}
      for (const members of order) done[members] = await ingest(work, broker.address, members, `g${r}-${members}`)
      const one = done[1]!
      const many = done[MEMBERS]!
      rounds.push({one, many, ratio: many.imagesPerSec / one.imagesPerSec})
      process.stderr.write(`round ${r}: 1 process ${one.imagesPerSec.toFixed(0)} img/s, ${MEMBERS} processes ${many.imagesPerSec.toFixed(0)} img/s\n`)
    }
    const lost = rounds.reduce((n, r) => n + Math.max(0, IMAGES - r.one.distinct) + Math.max(0, IMAGES - r.many.distinct), 0)
    const duplicated = rounds.reduce((n, r) => n + (r.one.stored - r.one.distinct) + (r.many.stored - r.many.distinct), 0)
    const ratio = median(rounds.map((r) => r.ratio))
    const result = {
      images: IMAGES,
      partitions: PARTITIONS,
      members: MEMBERS,
      rounds: ROUNDS,
      cores: os.availableParallelism(),
      loadAverage: round2(os.loadavg()[0]!),
      oneProcessImagesPerSec: Math.round(median(rounds.map((r) => r.one.imagesPerSec))),
      groupImagesPerSec: Math.round(median(rounds.map((r) => r.many.imagesPerSec))),
      /** group / one process, median of the per-round ratios. */
      groupToOneRatio: round2(ratio),
      target: TARGET_RATIO,
      met: ratio >= TARGET_RATIO,
      perRound: rounds.map((r) => ({one: round2(r.one.seconds), group: round2(r.many.seconds), groupVersions: r.many.versions, ratio: round2(r.ratio)})),
      lost,
      duplicated,
    }
    process.stdout.write(`${JSON.stringify(result)}\n`)
  } finally {
    await broker.stop()
    await rm(work, {recursive: true, force: true})
  }
}

await main()
