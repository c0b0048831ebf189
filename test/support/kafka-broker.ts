// An in-process, single-node Kafka broker for tests: the real wire protocol (the API versions kafkajs
// 2.2.4 negotiates), partitioned logs of RecordBatch v2, consumer groups, restarts, injected faults,
// and optionally TLS (with client certificates) and SASL PLAIN / SCRAM-SHA-256.
import {randomUUID} from 'node:crypto'
import {EventEmitter} from 'node:events'
import net from 'node:net'
import tls from 'node:tls'
import {SaslAccount, type SaslExchange, type SaslMechanism, type SaslUser} from './kafka-sasl.js'
import {BATCH, decodeBatchRecords, inspectBatch, Reader, Writer, type WireRecord} from './kafka-wire.js'

export const API = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  SaslHandshake: 17,
  ApiVersions: 18,
  CreateTopics: 19,
  SaslAuthenticate: 36,
} as const
export type ApiName = keyof typeof API

/**
 * The versions this broker implements, and so the only ones ApiVersions advertises. kafkajs takes
 * min(its best, our max) for each API, so these are exactly what it sends.
 */
export const VERSIONS: Record<ApiName, readonly [number, number]> = {
  Produce: [3, 3],
  Fetch: [4, 4],
  ListOffsets: [1, 1],
  Metadata: [4, 4],
  OffsetCommit: [2, 2],
  OffsetFetch: [1, 1],
  FindCoordinator: [1, 1],
  JoinGroup: [2, 2],
  Heartbeat: [1, 1],
  LeaveGroup: [1, 1],
  SyncGroup: [1, 1],
  // v1 only: after a v0 handshake the SASL tokens would go unframed, which kafkajs never needs here.
  SaslHandshake: [1, 1],
  ApiVersions: [0, 3],
  CreateTopics: [1, 1],
  SaslAuthenticate: [0, 1],
}

export const ERRORS = {
  NONE: 0,
  OFFSET_OUT_OF_RANGE: 1,
  CORRUPT_MESSAGE: 2,
  UNKNOWN_TOPIC_OR_PARTITION: 3,
  LEADER_NOT_AVAILABLE: 5,
  NOT_LEADER_FOR_PARTITION: 6,
  REQUEST_TIMED_OUT: 7,
  COORDINATOR_NOT_AVAILABLE: 15,
  NOT_COORDINATOR: 16,
  ILLEGAL_GENERATION: 22,
  INCONSISTENT_GROUP_PROTOCOL: 23,
  UNKNOWN_MEMBER_ID: 25,
  REBALANCE_IN_PROGRESS: 27,
  UNSUPPORTED_SASL_MECHANISM: 33,
  ILLEGAL_SASL_STATE: 34,
  UNSUPPORTED_VERSION: 35,
  TOPIC_ALREADY_EXISTS: 36,
  INVALID_PARTITIONS: 37,
  INVALID_REQUEST: 42,
  SASL_AUTHENTICATION_FAILED: 58,
} as const
export type ErrorName = keyof typeof ERRORS

const API_NAMES = new Map<number, ApiName>(Object.entries(API).map(([name, key]) => [key, name as ApiName]))
const NODE_ID = 0
const CLUSTER_ID = 'ml-test-cluster'

export interface KafkaBrokerOptions {
  /** 0 (the default) picks a free port; restarts reuse the port first bound. */
  port?: number
  host?: string
  /** Create unknown topics on Metadata (when the client allows it) and Produce. Default true. */
  autoCreateTopics?: boolean
  /** Partitions of auto-created topics. Default 1. */
  defaultPartitions?: number
  /**
   * A slow broker: requests of these APIs are processed halfway through this many ms (not at all
   * if the client hung up before: as if the request never arrived) and answered at the end.
   */
  delays?: Partial<Record<ApiName, number>>
  /** Speak TLS with this certificate and key (PEM). */
  tls?: {
    cert: Buffer
    key: Buffer
    /** Also ask clients for a certificate, and accept only those this CA (PEM) signed: mutual TLS. */
    clientCa?: Buffer
  }
  /**
   * Require SASL (PLAIN or SCRAM-SHA-256) as this user on every connection, before any request but
   * ApiVersions: anything else first closes the connection, as a real broker does.
   */
  sasl?: SaslUser
}

/** A fault to inject into the next requests of one API. */
export type Fault = {error: ErrorName} | {drop: true}

export interface RequestEvent {
  api: ApiName
  version: number
  clientId: string | null
}

interface Batch {
  base: number
  last: number
  maxTimestamp: number
  bytes: Buffer
}

class PartitionLog {
  readonly batches: Batch[] = []
  /** The high watermark: the offset the next record gets. */
  next = 0
  readonly waiters = new Set<() => void>()

  append(batch: Buffer, lastOffsetDelta: number, maxTimestamp: number): number {
    const base = this.next
    // The client's base offset is a placeholder; the log assigns the real one. The CRC does not
    // cover it (nor the leader epoch), so the stored batch stays valid.
    const stored = Buffer.from(batch)
    stored.writeBigInt64BE(BigInt(base), BATCH.baseOffset)
    stored.writeInt32BE(0, BATCH.leaderEpoch)
    this.batches.push({base, last: base + lastOffsetDelta, maxTimestamp, bytes: stored})
    this.next = base + lastOffsetDelta + 1
    for (const wake of [...this.waiters]) wake()
    return base
  }

  /** Index of the first batch holding `offset` or later. */
  find(offset: number): number {
    let lo = 0
    let hi = this.batches.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (this.batches[mid]!.last < offset) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

interface Member {
  id: string
  clientId: string
  sessionTimeout: number
  rebalanceTimeout: number
  protocolType: string
  protocols: Array<{name: string; metadata: Buffer}>
  assignment: Buffer
  pendingJoin?: (body: Buffer) => void
  pendingSync?: (body: Buffer) => void
  timer?: NodeJS.Timeout
}

type GroupState = 'Empty' | 'PreparingRebalance' | 'CompletingRebalance' | 'Stable'

interface Group {
  id: string
  state: GroupState
  generation: number
  protocol: string | null
  protocolType: string | null
  leader: string | null
  members: Map<string, Member>
  offsets: Map<string, {offset: number; metadata: string | null}>
  rebalanceTimer?: NodeJS.Timeout
}

const tp = (topic: string, partition: number) => `${topic}\u0000${partition}`

interface Connection {
  socket: net.Socket
  buffer: Buffer
  chain: Promise<void>
  /** False on a SASL broker until the client authenticated. */
  authenticated: boolean
  /** The SASL exchange a SaslHandshake started. */
  sasl?: SaslExchange
  /** Set by an answer after which the broker hangs up (a failed authentication). */
  closeAfterReply?: boolean
}

/**
 * A single-node Kafka broker on 127.0.0.1. One connection's requests are answered in order (as a
 * real broker does), so a long-polling Fetch delays only its own connection. stop() closes every
 * socket but keeps topics, logs, committed offsets and group membership in memory; start() listens
 * again on the same port, and clients reconnect as they would to a restarted broker.
 */
export class KafkaBroker extends EventEmitter {
  readonly host: string
  private wantedPort: number
  private server: net.Server | undefined
  /** Every TCP connection, TLS handshakes under way included, for stop() to cut. */
  private readonly sockets = new Set<net.Socket>()
  private readonly topics = new Map<string, PartitionLog[]>()
  private readonly groups = new Map<string, Group>()
  private readonly faults = new Map<ApiName, Fault[]>()
  /** Requests held back until their gate opens (see hold()). */
  private readonly gates = new Set<{api: ApiName; clientId: string; opened: Promise<void>}>()
  private readonly timers = new Set<NodeJS.Timeout>()
  private readonly autoCreate: boolean
  private readonly defaultPartitions: number
  private readonly delays: Partial<Record<ApiName, number>>
  private readonly tls: KafkaBrokerOptions['tls']
  private readonly account: SaslAccount | undefined
  private running = false

  constructor(options: KafkaBrokerOptions = {}) {
    super()
    this.host = options.host ?? '127.0.0.1'
    this.wantedPort = options.port ?? 0
    this.autoCreate = options.autoCreateTopics ?? true
    this.defaultPartitions = options.defaultPartitions ?? 1
    this.delays = options.delays ?? {}
    this.tls = options.tls
    this.account = options.sasl && new SaslAccount(options.sasl)
  }

  /** Creates a broker and starts it. */
  static async create(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
    const broker = new KafkaBroker(options)
    await broker.start()
    return broker
  }

  get port(): number {
    return this.wantedPort
  }

  /** `host:port`, for kafkajs' `brokers`. */
  get address(): string {
    return `${this.host}:${this.wantedPort}`
  }

  async start(): Promise<void> {
    if (this.running) return
    const secure = this.tls
    const server = secure
      ? tls.createServer(
          {cert: secure.cert, key: secure.key, ...(secure.clientCa ? {ca: secure.clientCa, requestCert: true, rejectUnauthorized: true} : {})},
          (socket) => this.accept(socket),
        )
      : net.createServer((socket) => this.accept(socket))
    server.on('connection', (socket: net.Socket) => {
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
    // A client that refuses our certificate, or offers none we accept: the tests look at what the
    // client reports, and the socket is closed either way.
    server.on('tlsClientError', () => {})
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.wantedPort, this.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    this.wantedPort = (server.address() as net.AddressInfo).port
    this.server = server
    this.running = true
    // After a restart, members get a full session to come back, and a pending rebalance its time.
    for (const group of this.groups.values()) {
      for (const member of group.members.values()) this.touch(group, member)
      if (group.state === 'PreparingRebalance') this.prepareRebalance(group)
    }
  }

  /** Closes the listener and every connection; everything else stays for start(). */
  async stop(): Promise<void> {
    if (!this.running) return
    this.running = false
    const server = this.server!
    this.server = undefined
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    for (const log of this.allLogs()) log.waiters.clear()
    // Group metadata survives, as a real coordinator reloads it; only answers owed on the closed
    // connections are lost (their clients retry), and every clock stops until start().
    for (const group of this.groups.values()) {
      clearTimeout(group.rebalanceTimer)
      for (const member of group.members.values()) {
        clearTimeout(member.timer)
        member.pendingJoin = undefined
        member.pendingSync = undefined
      }
    }
    await closed
  }

  /** Answers the next `times` requests of `api` with `fault` instead of the real response. */
  inject(api: ApiName, fault: Fault, times = 1): void {
    const queue = this.faults.get(api) ?? []
    for (let i = 0; i < times; i++) queue.push(fault)
    this.faults.set(api, queue)
  }

  /**
   * Holds back every request of `api` from clients named `clientId` (a member that is slow to come
   * back, say) until the returned function is called; the held requests are then served in order.
   */
  hold(api: ApiName, clientId: string): () => void {
    let open!: () => void
    const gate = {api, clientId, opened: new Promise<void>((resolve) => (open = resolve))}
    this.gates.add(gate)
    return () => {
      this.gates.delete(gate)
      open()
    }
  }

  /**
   * Ends a member's session now, as when its heartbeats stop arriving in time: it leaves the group
   * (a rebalance follows), and its next request as that member is answered UNKNOWN_MEMBER_ID.
   */
  expire(groupId: string, memberId: string): void {
    const group = this.groups.get(groupId)
    const member = group?.members.get(memberId)
    if (!group || !member) throw new Error(`no member ${memberId} in group ${groupId}`)
    this.removeMember(group, member, true)
  }

  createTopic(name: string, partitions: number): void {
    if (this.topics.has(name)) throw new Error(`topic ${name} exists`)
    this.topics.set(name, Array.from({length: partitions}, () => new PartitionLog()))
  }

  hasTopic(name: string): boolean {
    return this.topics.has(name)
  }

  /** Partition count of a topic (0 when it does not exist). */
  partitions(topic: string): number {
    return this.topics.get(topic)?.length ?? 0
  }

  /** High watermark of one partition. */
  highWatermark(topic: string, partition: number): number {
    return this.topics.get(topic)?.[partition]?.next ?? 0
  }

  /** Decoded records of one partition (uncompressed batches only). */
  records(topic: string, partition: number): WireRecord[] {
    const log = this.topics.get(topic)?.[partition]
    return log ? log.batches.flatMap((b) => decodeBatchRecords(b.bytes)) : []
  }

  /** The offset a group committed for a partition, if any. */
  committed(groupId: string, topic: string, partition: number): number | undefined {
    return this.groups.get(groupId)?.offsets.get(tp(topic, partition))?.offset
  }

  /** Sets (or, with undefined, forgets) a group's committed offset: simulates a commit that was lost. */
  setCommitted(groupId: string, topic: string, partition: number, offset: number | undefined): void {
    const group = this.groupOf(groupId)
    if (offset === undefined) group.offsets.delete(tp(topic, partition))
    else group.offsets.set(tp(topic, partition), {offset, metadata: null})
  }

  /** Current members and generation of a group. */
  group(groupId: string): {state: GroupState; generation: number; members: string[]} | undefined {
    const g = this.groups.get(groupId)
    return g && {state: g.state, generation: g.generation, members: [...g.members.keys()]}
  }

  private *allLogs(): Iterable<PartitionLog> {
    for (const logs of this.topics.values()) yield* logs
  }

  private accept(socket: net.Socket): void {
    if (!this.running) {
      socket.destroy()
      return
    }
    socket.setNoDelay(true)
    const conn: Connection = {socket, buffer: Buffer.alloc(0), chain: Promise.resolve(), authenticated: this.account === undefined}
    socket.on('data', (chunk: Buffer) => {
      conn.buffer = conn.buffer.length === 0 ? chunk : Buffer.concat([conn.buffer, chunk])
      while (conn.buffer.length >= 4) {
        const size = conn.buffer.readInt32BE(0)
        if (size < 0 || size > 256 << 20) {
          socket.destroy()
          return
        }
        if (conn.buffer.length < 4 + size) break
        const frame = conn.buffer.subarray(4, 4 + size)
        conn.buffer = conn.buffer.subarray(4 + size)
        conn.chain = conn.chain.then(() => this.serve(conn, frame)).catch(() => {
          socket.destroy()
        })
      }
    })
    socket.on('error', () => {})
  }

  private async serve(conn: Connection, frame: Buffer): Promise<void> {
    // Nothing more is read once a reply hung up.
    if (conn.socket.destroyed || conn.closeAfterReply) return
    const r = new Reader(frame)
    const apiKey = r.int16()
    const version = r.int16()
    const correlationId = r.int32()
    const clientId = r.string()
    const api = API_NAMES.get(apiKey)
    const send = (body: Buffer) => {
      if (conn.socket.destroyed) return
      const head = Buffer.alloc(8)
      head.writeInt32BE(body.length + 4, 0)
      head.writeInt32BE(correlationId, 4)
      conn.socket.write(Buffer.concat([head, body]))
    }
    if (api === undefined) {
      // A real broker drops the connection on an API it does not know.
      conn.socket.destroy()
      return
    }
    const [min, max] = VERSIONS[api]
    if (version < min || version > max) {
      if (api === 'ApiVersions') {
        // KIP-511: answer in v0 so the client can read the error and the supported range.
        send(this.apiVersionsBody(0, ERRORS.UNSUPPORTED_VERSION))
      } else {
        conn.socket.destroy()
      }
      return
    }
    const saslTurn = api === 'ApiVersions' || (api === 'SaslHandshake' && !conn.sasl) || (api === 'SaslAuthenticate' && conn.sasl !== undefined)
    if (!conn.authenticated && !saslTurn) {
      // A SASL listener takes ApiVersions and then only the SASL exchange, in order, until it
      // succeeds; a real broker drops a connection that sends anything else.
      conn.socket.destroy()
      return
    }
    // Request header v2 (flexible versions) adds tagged fields after the client id. Of what we
    // advertise, only ApiVersions v3 is flexible.
    if (api === 'ApiVersions' && version >= 3) r.taggedFields()
    this.emit('request', {api, version, clientId} satisfies RequestEvent)
    for (const gate of [...this.gates]) if (gate.api === api && gate.clientId === clientId) await gate.opened
    if (conn.socket.destroyed || !this.running) return
    const delay = this.delays[api] ?? 0
    if (delay > 0) {
      await this.sleep(delay / 2)
      if (conn.socket.destroyed || !this.running) return
    }
    const fault = this.faults.get(api)?.shift()
    if (fault && 'drop' in fault) return
    const code = fault ? ERRORS[fault.error] : ERRORS.NONE
    const body = await this.handle(conn, api, version, r, code, clientId ?? '')
    if (delay > 0) await this.sleep(delay / 2)
    if (body !== null) send(body)
    if (conn.closeAfterReply) conn.socket.end()
  }

  /** A timer that stop() cancels (the promise then never settles; its connection is gone anyway). */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer)
        resolve()
      }, ms)
      this.timers.add(timer)
    })
  }

  private async handle(conn: Connection, api: ApiName, version: number, r: Reader, fault: number, clientId: string): Promise<Buffer | null> {
    switch (api) {
      case 'ApiVersions':
        if (version >= 3) {
          r.compactString()
          r.compactString()
          r.taggedFields()
        }
        return this.apiVersionsBody(version, fault)
      case 'Metadata':
        return this.metadata(r, fault)
      case 'CreateTopics':
        return this.createTopics(r, fault)
      case 'Produce':
        return this.produce(r, fault)
      case 'Fetch':
        return this.fetch(r, fault)
      case 'ListOffsets':
        return this.listOffsets(r, fault)
      case 'FindCoordinator':
        return this.findCoordinator(r, fault)
      case 'JoinGroup':
        return this.joinGroup(r, fault, clientId)
      case 'SyncGroup':
        return this.syncGroup(r, fault)
      case 'Heartbeat':
        return this.heartbeat(r, fault)
      case 'LeaveGroup':
        return this.leaveGroup(r, fault)
      case 'OffsetCommit':
        return this.offsetCommit(r, fault)
      case 'OffsetFetch':
        return this.offsetFetch(r, fault)
      case 'SaslHandshake':
        return this.saslHandshake(conn, r, fault)
      case 'SaslAuthenticate':
        return this.saslAuthenticate(conn, r, version, fault)
    }
  }

  private saslHandshake(conn: Connection, r: Reader, fault: number): Buffer {
    const mechanism = r.string() ?? ''
    const body = (error: number) => new Writer().int16(error).array(this.account?.mechanisms ?? [], (w, m) => w.string(m)).toBuffer()
    if (fault !== ERRORS.NONE) return body(fault)
    // A connection that needs no authentication (no SASL here, or done already) gets what a real
    // broker answers there.
    if (conn.authenticated) return body(ERRORS.ILLEGAL_SASL_STATE)
    if (!this.account?.mechanisms.includes(mechanism as SaslMechanism)) {
      conn.closeAfterReply = true
      return body(ERRORS.UNSUPPORTED_SASL_MECHANISM)
    }
    conn.sasl = this.account!.exchange(mechanism as SaslMechanism)
    return body(ERRORS.NONE)
  }

  private saslAuthenticate(conn: Connection, r: Reader, version: number, fault: number): Buffer {
    const bytes = r.bytes() ?? Buffer.alloc(0)
    const body = (error: number, message: string | null, reply: Buffer = Buffer.alloc(0)) => {
      const w = new Writer().int16(error).string(message).bytes(reply)
      // v1 adds the session lifetime: 0, no re-authentication.
      if (version >= 1) w.int64(0)
      return w.toBuffer()
    }
    if (fault !== ERRORS.NONE) return body(fault, 'injected')
    if (conn.authenticated) return body(ERRORS.ILLEGAL_SASL_STATE, 'SaslAuthenticate request received after successful authentication')
    const step = conn.sasl!.step(bytes)
    if ('error' in step) {
      // A real broker answers a failed authentication, then hangs up.
      conn.closeAfterReply = true
      return body(ERRORS.SASL_AUTHENTICATION_FAILED, step.error)
    }
    conn.authenticated = step.done
    return body(ERRORS.NONE, null, step.reply)
  }

  private apiVersionsBody(version: number, error: number): Buffer {
    const w = new Writer().int16(error)
    const entries = Object.entries(VERSIONS).map(([name, [min, max]]) => ({key: API[name as ApiName], min, max}))
    if (version >= 3) {
      w.uvarint(entries.length + 1)
      for (const e of entries) w.int16(e.key).int16(e.min).int16(e.max).uvarint(0)
      w.int32(0).uvarint(0)
    } else {
      w.array(entries, (w, e) => w.int16(e.key).int16(e.min).int16(e.max))
      if (version >= 1) w.int32(0)
    }
    return w.toBuffer()
  }

  private metadata(r: Reader, fault: number): Buffer {
    const requested = r.array((r) => r.string()!)
    const allowAuto = r.bool()
    const names = requested ?? [...this.topics.keys()]
    const w = new Writer().int32(0)
    w.array([NODE_ID], (w, id) => w.int32(id).string(this.host).int32(this.wantedPort).string(null))
    w.string(CLUSTER_ID).int32(NODE_ID)
    w.array(names, (w, name) => {
      let logs = this.topics.get(name)
      if (!logs && allowAuto && this.autoCreate) {
        this.createTopic(name, this.defaultPartitions)
        logs = this.topics.get(name)
      }
      if (!logs) {
        w.int16(ERRORS.UNKNOWN_TOPIC_OR_PARTITION).string(name).bool(false).int32(0)
        return
      }
      w.int16(fault).string(name).bool(false)
      w.array(logs, (w, _log, index) => {
        w.int16(fault).int32(index).int32(fault === ERRORS.LEADER_NOT_AVAILABLE ? -1 : NODE_ID)
        w.array([NODE_ID], (w, id) => w.int32(id)).array([NODE_ID], (w, id) => w.int32(id))
      })
    })
    return w.toBuffer()
  }

  private createTopics(r: Reader, fault: number): Buffer {
    const topics = r.array((r) => {
      const name = r.string()!
      const partitions = r.int32()
      r.int16()
      r.array((r) => [r.int32(), r.array((r) => r.int32())])
      r.array((r) => [r.string(), r.string()])
      return {name, partitions}
    })!
    r.int32()
    const validateOnly = r.bool()
    const results = topics.map(({name, partitions}) => {
      if (fault !== ERRORS.NONE) return {name, error: fault, message: null}
      if (this.topics.has(name)) return {name, error: ERRORS.TOPIC_ALREADY_EXISTS, message: `Topic '${name}' already exists.`}
      const count = partitions === -1 ? this.defaultPartitions : partitions
      if (count <= 0) return {name, error: ERRORS.INVALID_PARTITIONS, message: 'Number of partitions must be larger than 0.'}
      if (!validateOnly) this.createTopic(name, count)
      return {name, error: ERRORS.NONE, message: null}
    })
    return new Writer().array(results, (w, t) => w.string(t.name).int16(t.error).string(t.message)).toBuffer()
  }

  private produce(r: Reader, fault: number): Buffer | null {
    r.string()
    const acks = r.int16()
    r.int32()
    const data = r.array((r) => ({
      topic: r.string()!,
      partitions: r.array((r) => ({partition: r.int32(), records: r.bytes()}))!,
    }))!
    const results = data.map(({topic, partitions}) => {
      if (!this.topics.has(topic) && this.autoCreate) this.createTopic(topic, this.defaultPartitions)
      const logs = this.topics.get(topic)
      return {
        topic,
        partitions: partitions.map(({partition, records}) => {
          const log = logs?.[partition]
          if (!log) return {partition, error: ERRORS.UNKNOWN_TOPIC_OR_PARTITION, base: -1}
          if (fault !== ERRORS.NONE) return {partition, error: fault, base: -1}
          // Validate every batch before appending any, so a bad request leaves the log unchanged.
          const batches: Array<{bytes: Buffer; lastOffsetDelta: number; maxTimestamp: number}> = []
          let rest = records ?? Buffer.alloc(0)
          while (rest.length > 0) {
            const info = inspectBatch(rest)
            if ('error' in info) return {partition, error: ERRORS.CORRUPT_MESSAGE, base: -1}
            batches.push({bytes: rest.subarray(0, info.size), lastOffsetDelta: info.lastOffsetDelta, maxTimestamp: info.maxTimestamp})
            rest = rest.subarray(info.size)
          }
          if (batches.length === 0) return {partition, error: ERRORS.CORRUPT_MESSAGE, base: -1}
          let base = -1
          for (const b of batches) {
            const offset = log.append(b.bytes, b.lastOffsetDelta, b.maxTimestamp)
            if (base === -1) base = offset
          }
          return {partition, error: ERRORS.NONE, base}
        }),
      }
    })
    if (acks === 0) return null
    const w = new Writer()
    w.array(results, (w, t) => w.string(t.topic).array(t.partitions, (w, p) => w.int32(p.partition).int16(p.error).int64(p.base).int64(-1)))
    return w.int32(0).toBuffer()
  }

  private fetch(r: Reader, fault: number): Promise<Buffer> | Buffer {
    r.int32()
    const maxWait = r.int32()
    const minBytes = r.int32()
    const maxBytes = r.int32()
    r.int8()
    const topics = r.array((r) => ({
      topic: r.string()!,
      partitions: r.array((r) => ({partition: r.int32(), offset: r.int64(), maxBytes: r.int32()}))!,
    }))!
    const build = () => {
      let budget = maxBytes
      let total = 0
      let anyError = fault !== ERRORS.NONE
      const responses = topics.map(({topic, partitions}) => ({
        topic,
        partitions: partitions.map(({partition, offset, maxBytes: partitionMax}) => {
          const log = this.topics.get(topic)?.[partition]
          if (fault !== ERRORS.NONE) return {partition, error: fault, hw: log?.next ?? -1, chunks: [] as Buffer[]}
          if (!log) {
            anyError = true
            return {partition, error: ERRORS.UNKNOWN_TOPIC_OR_PARTITION, hw: -1, chunks: [] as Buffer[]}
          }
          if (offset < 0 || offset > log.next) {
            anyError = true
            return {partition, error: ERRORS.OFFSET_OUT_OF_RANGE, hw: log.next, chunks: [] as Buffer[]}
          }
          const chunks: Buffer[] = []
          let size = 0
          for (let i = log.find(offset); i < log.batches.length; i++) {
            const bytes = log.batches[i]!.bytes
            // KIP-74: a partition's first batch is returned even when over its limit (and the
            // response's first even when over the whole limit), so one big message never blocks.
            if ((size > 0 && size + bytes.length > partitionMax) || (total > 0 && bytes.length > budget)) break
            chunks.push(bytes)
            size += bytes.length
            total += bytes.length
            budget -= bytes.length
          }
          return {partition, error: ERRORS.NONE, hw: log.next, chunks}
        }),
      }))
      return {responses, total, anyError}
    }
    const encode = (result: ReturnType<typeof build>) => {
      const w = new Writer().int32(0)
      w.array(result.responses, (w, t) =>
        w.string(t.topic).array(t.partitions, (w, p) => {
          w.int32(p.partition).int16(p.error).int64(p.hw).int64(p.hw).int32(0)
          const size = p.chunks.reduce((n, c) => n + c.length, 0)
          w.int32(size)
          for (const c of p.chunks) w.raw(c)
        }),
      )
      return w.toBuffer()
    }
    const first = build()
    if (first.anyError || first.total >= Math.max(minBytes, 1) || maxWait <= 0) return encode(first)
    // Long poll: sleep until a requested partition gets data or maxWait passes, never spinning.
    const logs = topics.flatMap(({topic, partitions}) => partitions.map((p) => this.topics.get(topic)?.[p.partition])).filter((l) => l !== undefined)
    return new Promise<Buffer>((resolve) => {
      let timer: NodeJS.Timeout | undefined
      const finish = () => {
        for (const log of logs) log.waiters.delete(wake)
        if (timer) {
          clearTimeout(timer)
          this.timers.delete(timer)
        }
        resolve(encode(build()))
      }
      const wake = () => {
        if (build().total >= Math.max(minBytes, 1)) finish()
      }
      for (const log of logs) log.waiters.add(wake)
      timer = setTimeout(finish, maxWait)
      this.timers.add(timer)
    })
  }

  private listOffsets(r: Reader, fault: number): Buffer {
    r.int32()
    const topics = r.array((r) => ({topic: r.string()!, partitions: r.array((r) => ({partition: r.int32(), timestamp: r.int64()}))!}))!
    const w = new Writer()
    w.array(topics, (w, t) =>
      w.string(t.topic).array(t.partitions, (w, p) => {
        const log = this.topics.get(t.topic)?.[p.partition]
        if (fault !== ERRORS.NONE || !log) {
          w.int32(p.partition).int16(fault !== ERRORS.NONE ? fault : ERRORS.UNKNOWN_TOPIC_OR_PARTITION).int64(-1).int64(-1)
          return
        }
        let offset: number
        if (p.timestamp === -1) offset = log.next
        else if (p.timestamp === -2) offset = 0
        else {
          // Batch granularity: the first batch whose newest record is at or after the timestamp.
          const batch = log.batches.find((b) => b.maxTimestamp >= p.timestamp)
          offset = batch ? batch.base : -1
        }
        w.int32(p.partition).int16(ERRORS.NONE).int64(-1).int64(offset)
      }),
    )
    return w.toBuffer()
  }

  private findCoordinator(r: Reader, fault: number): Buffer {
    r.string()
    r.int8()
    const w = new Writer().int32(0).int16(fault).string(fault === ERRORS.NONE ? null : 'injected')
    return w.int32(fault === ERRORS.NONE ? NODE_ID : -1).string(fault === ERRORS.NONE ? this.host : '').int32(fault === ERRORS.NONE ? this.wantedPort : -1).toBuffer()
  }

  private groupOf(id: string): Group {
    let group = this.groups.get(id)
    if (!group) {
      group = {id, state: 'Empty', generation: 0, protocol: null, protocolType: null, leader: null, members: new Map(), offsets: new Map()}
      this.groups.set(id, group)
    }
    return group
  }

  private joinBody(error: number, group: Group | null, memberId: string, leaderView: boolean): Buffer {
    const w = new Writer().int32(0).int16(error)
    w.int32(group && error === ERRORS.NONE ? group.generation : -1)
    w.string(group && error === ERRORS.NONE ? group.protocol : null)
    w.string(group && error === ERRORS.NONE ? group.leader : '')
    w.string(memberId)
    const members = group && leaderView ? [...group.members.values()] : []
    w.array(members, (w, m) => w.string(m.id).bytes(m.protocols.find((p) => p.name === group!.protocol)?.metadata ?? Buffer.alloc(0)))
    return w.toBuffer()
  }

  private joinGroup(r: Reader, fault: number, clientId: string): Buffer | Promise<Buffer> {
    const groupId = r.string()!
    const sessionTimeout = r.int32()
    const rebalanceTimeout = r.int32()
    const requestedId = r.string() ?? ''
    const protocolType = r.string()!
    const protocols = r.array((r) => ({name: r.string()!, metadata: r.bytes() ?? Buffer.alloc(0)}))!
    if (fault !== ERRORS.NONE) return this.joinBody(fault, null, requestedId, false)
    const group = this.groupOf(groupId)
    if (group.members.size > 0 && group.protocolType !== protocolType) return this.joinBody(ERRORS.INCONSISTENT_GROUP_PROTOCOL, null, requestedId, false)
    if (group.members.size > 0 && !protocols.some((p) => [...group.members.values()].every((m) => m.protocols.some((q) => q.name === p.name)))) {
      return this.joinBody(ERRORS.INCONSISTENT_GROUP_PROTOCOL, null, requestedId, false)
    }
    let member: Member
    if (requestedId === '') {
      member = {id: `${clientId}-${randomUUID()}`, clientId, sessionTimeout, rebalanceTimeout, protocolType, protocols, assignment: Buffer.alloc(0)}
      group.members.set(member.id, member)
    } else {
      const known = group.members.get(requestedId)
      if (!known) return this.joinBody(ERRORS.UNKNOWN_MEMBER_ID, null, requestedId, false)
      member = known
      Object.assign(member, {sessionTimeout, rebalanceTimeout, protocols, protocolType})
    }
    group.protocolType = protocolType
    clearTimeout(member.timer)
    const reply = new Promise<Buffer>((resolve) => {
      member.pendingJoin = resolve
    })
    if (group.state !== 'PreparingRebalance') this.prepareRebalance(group)
    this.maybeCompleteJoin(group)
    return reply
  }

  private prepareRebalance(group: Group): void {
    if (group.state === 'CompletingRebalance') {
      // Members waiting for their assignment must start over.
      for (const m of group.members.values()) {
        if (m.pendingSync) {
          m.pendingSync(this.syncBody(ERRORS.REBALANCE_IN_PROGRESS, Buffer.alloc(0)))
          m.pendingSync = undefined
        }
      }
    }
    group.state = 'PreparingRebalance'
    clearTimeout(group.rebalanceTimer)
    const timeout = Math.max(0, ...[...group.members.values()].map((m) => m.rebalanceTimeout))
    group.rebalanceTimer = setTimeout(() => this.completeJoin(group), timeout)
  }

  private maybeCompleteJoin(group: Group): void {
    if (group.state !== 'PreparingRebalance') return
    if ([...group.members.values()].every((m) => m.pendingJoin)) this.completeJoin(group)
  }

  private completeJoin(group: Group): void {
    clearTimeout(group.rebalanceTimer)
    group.rebalanceTimer = undefined
    // Members that did not rejoin within the rebalance timeout are out.
    for (const m of [...group.members.values()]) {
      if (!m.pendingJoin) this.removeMember(group, m, false)
    }
    if (group.members.size === 0) {
      group.state = 'Empty'
      group.leader = null
      group.protocol = null
      return
    }
    group.generation++
    const members = [...group.members.values()]
    const first = members[0]!
    group.protocol = first.protocols.find((p) => members.every((m) => m.protocols.some((q) => q.name === p.name)))?.name ?? null
    if (!group.leader || !group.members.has(group.leader)) group.leader = first.id
    group.state = 'CompletingRebalance'
    for (const m of members) {
      const reply = m.pendingJoin!
      m.pendingJoin = undefined
      this.touch(group, m)
      reply(this.joinBody(ERRORS.NONE, group, m.id, m.id === group.leader))
    }
  }

  /** (Re)starts a member's session timer: no heartbeat within the session timeout removes it. */
  private touch(group: Group, member: Member): void {
    clearTimeout(member.timer)
    member.timer = setTimeout(() => {
      if (member.pendingJoin || member.pendingSync) return
      if (group.members.get(member.id) !== member) return
      this.removeMember(group, member, true)
    }, member.sessionTimeout)
  }

  private removeMember(group: Group, member: Member, rebalance: boolean): void {
    clearTimeout(member.timer)
    group.members.delete(member.id)
    if (member.pendingJoin) member.pendingJoin(this.joinBody(ERRORS.UNKNOWN_MEMBER_ID, null, member.id, false))
    if (member.pendingSync) member.pendingSync(this.syncBody(ERRORS.UNKNOWN_MEMBER_ID, Buffer.alloc(0)))
    if (!rebalance) return
    if (group.members.size === 0) {
      clearTimeout(group.rebalanceTimer)
      group.state = 'Empty'
      group.leader = null
      return
    }
    if (group.state === 'PreparingRebalance') this.maybeCompleteJoin(group)
    else this.prepareRebalance(group)
  }

  private syncBody(error: number, assignment: Buffer): Buffer {
    return new Writer().int32(0).int16(error).bytes(assignment).toBuffer()
  }

  private syncGroup(r: Reader, fault: number): Buffer | Promise<Buffer> {
    const groupId = r.string()!
    const generation = r.int32()
    const memberId = r.string()!
    const assignments = r.array((r) => ({member: r.string()!, assignment: r.bytes() ?? Buffer.alloc(0)}))!
    if (fault !== ERRORS.NONE) return this.syncBody(fault, Buffer.alloc(0))
    const group = this.groups.get(groupId)
    const member = group?.members.get(memberId)
    if (!group || !member) return this.syncBody(ERRORS.UNKNOWN_MEMBER_ID, Buffer.alloc(0))
    if (generation !== group.generation) return this.syncBody(ERRORS.ILLEGAL_GENERATION, Buffer.alloc(0))
    if (group.state === 'PreparingRebalance') return this.syncBody(ERRORS.REBALANCE_IN_PROGRESS, Buffer.alloc(0))
    this.touch(group, member)
    if (group.state === 'Stable') return this.syncBody(ERRORS.NONE, member.assignment)
    const reply = new Promise<Buffer>((resolve) => {
      member.pendingSync = resolve
    })
    if (memberId === group.leader) {
      for (const m of group.members.values()) m.assignment = assignments.find((a) => a.member === m.id)?.assignment ?? Buffer.alloc(0)
      group.state = 'Stable'
      for (const m of group.members.values()) {
        if (!m.pendingSync) continue
        const resolve = m.pendingSync
        m.pendingSync = undefined
        this.touch(group, m)
        resolve(this.syncBody(ERRORS.NONE, m.assignment))
      }
    }
    return reply
  }

  private heartbeat(r: Reader, fault: number): Buffer {
    const groupId = r.string()!
    const generation = r.int32()
    const memberId = r.string()!
    const body = (error: number) => new Writer().int32(0).int16(error).toBuffer()
    if (fault !== ERRORS.NONE) return body(fault)
    const group = this.groups.get(groupId)
    const member = group?.members.get(memberId)
    if (!group || !member) return body(ERRORS.UNKNOWN_MEMBER_ID)
    this.touch(group, member)
    if (group.state === 'PreparingRebalance' || group.state === 'CompletingRebalance') return body(ERRORS.REBALANCE_IN_PROGRESS)
    if (generation !== group.generation) return body(ERRORS.ILLEGAL_GENERATION)
    return body(ERRORS.NONE)
  }

  private leaveGroup(r: Reader, fault: number): Buffer {
    const groupId = r.string()!
    const memberId = r.string()!
    const body = (error: number) => new Writer().int32(0).int16(error).toBuffer()
    if (fault !== ERRORS.NONE) return body(fault)
    const group = this.groups.get(groupId)
    const member = group?.members.get(memberId)
    if (!group || !member) return body(ERRORS.UNKNOWN_MEMBER_ID)
    this.removeMember(group, member, true)
    return body(ERRORS.NONE)
  }

  private offsetCommit(r: Reader, fault: number): Buffer {
    const groupId = r.string()!
    const generation = r.int32()
    const memberId = r.string() ?? ''
    r.int64()
    const topics = r.array((r) => ({topic: r.string()!, partitions: r.array((r) => ({partition: r.int32(), offset: r.int64(), metadata: r.string()}))!}))!
    const group = this.groupOf(groupId)
    let error: number = fault
    if (error === ERRORS.NONE) {
      const member = group.members.get(memberId)
      if (generation < 0 && memberId === '') {
        // A "simple" commit outside any generation is only allowed while nobody is in the group.
        if (group.members.size > 0) error = ERRORS.ILLEGAL_GENERATION
      } else if (!member) error = ERRORS.UNKNOWN_MEMBER_ID
      else if (generation !== group.generation) error = ERRORS.ILLEGAL_GENERATION
      else if (group.state === 'CompletingRebalance') error = ERRORS.REBALANCE_IN_PROGRESS
      else this.touch(group, member)
    }
    const w = new Writer()
    w.array(topics, (w, t) =>
      w.string(t.topic).array(t.partitions, (w, p) => {
        let code = error
        if (code === ERRORS.NONE && !this.topics.get(t.topic)?.[p.partition]) code = ERRORS.UNKNOWN_TOPIC_OR_PARTITION
        if (code === ERRORS.NONE) group.offsets.set(tp(t.topic, p.partition), {offset: p.offset, metadata: p.metadata})
        w.int32(p.partition).int16(code)
      }),
    )
    if (error === ERRORS.NONE) this.emit('commit', {groupId, topics})
    return w.toBuffer()
  }

  private offsetFetch(r: Reader, fault: number): Buffer {
    const groupId = r.string()!
    const topics = r.array((r) => ({topic: r.string()!, partitions: r.array((r) => r.int32())!}))!
    const group = this.groups.get(groupId)
    const w = new Writer()
    w.array(topics, (w, t) =>
      w.string(t.topic).array(t.partitions, (w, partition) => {
        const committed = group?.offsets.get(tp(t.topic, partition))
        w.int32(partition).int64(fault === ERRORS.NONE ? committed?.offset ?? -1 : -1).string(committed?.metadata ?? '').int16(fault)
      }),
    )
    return w.toBuffer()
  }
}
