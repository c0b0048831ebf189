// The broker side of SASL for the test Kafka broker: PLAIN (RFC 4616), SCRAM-SHA-256 and
// SCRAM-SHA-512 (RFC 5802, RFC 7677), checked against one user, with the failure messages a real
// broker sends.
import {createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual} from 'node:crypto'

export const SASL_MECHANISMS = ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'] as const
export type SaslMechanism = (typeof SASL_MECHANISMS)[number]

export interface SaslUser {
  username: string
  password: string
  /** The mechanisms the broker enables (default: all of SASL_MECHANISMS). */
  mechanisms?: readonly SaslMechanism[]
}

/** One SaslAuthenticate round: bytes for the client and whether the exchange is over, or why it failed. */
export type SaslStep = {reply: Buffer; done: boolean} | {error: string}

// The fewest RFC 7677 allows, and kafkajs refuses fewer.
const ITERATIONS = 4096
const GS2_HEADER = /^[ny],(a=[^,]*)?,/

/** What a broker keeps of a SCRAM user (never the password): RFC 5802 section 3. */
interface ScramCredential {
  salt: Buffer
  storedKey: Buffer
  serverKey: Buffer
}

type ScramHash = 'sha256' | 'sha512'
const SCRAM_HASH: Record<Exclude<SaslMechanism, 'PLAIN'>, ScramHash> = {'SCRAM-SHA-256': 'sha256', 'SCRAM-SHA-512': 'sha512'}
const DIGEST_BYTES: Record<ScramHash, number> = {sha256: 32, sha512: 64}

const hmac = (hash: ScramHash, key: Buffer, data: string) => createHmac(hash, key).update(data).digest()

function scramCredential(hash: ScramHash, password: string): ScramCredential {
  const salt = randomBytes(16)
  const salted = pbkdf2Sync(password, salt, ITERATIONS, DIGEST_BYTES[hash], hash)
  return {salt, storedKey: createHash(hash).update(hmac(hash, salted, 'Client Key')).digest(), serverKey: hmac(hash, salted, 'Server Key')}
}

/** `a=1,b=2` attributes of a SCRAM message (a value may itself hold `=`). */
function attributes(message: string): Map<string, string> {
  return new Map(message.split(',').map((part) => [part.slice(0, 1), part.slice(2)]))
}

/** A saslname: `=2C` and `=3D` stand for `,` and `=`; any other `=` makes it invalid (undefined). */
function saslName(name: string): string | undefined {
  if (/=(?!2C|3D)/.test(name)) return undefined
  return name.replace(/=2C/g, ',').replace(/=3D/g, '=')
}

/** The user a broker accepts, with the SCRAM credential derived once as a real broker stores it. */
export class SaslAccount {
  /** One credential per SCRAM hash, as a broker stores one per mechanism. */
  readonly scram: Record<ScramHash, ScramCredential>
  readonly mechanisms: readonly SaslMechanism[]

  constructor(readonly user: SaslUser) {
    this.scram = {sha256: scramCredential('sha256', user.password), sha512: scramCredential('sha512', user.password)}
    this.mechanisms = user.mechanisms ?? SASL_MECHANISMS
  }

  /** A new exchange for one connection. */
  exchange(mechanism: SaslMechanism): SaslExchange {
    return new SaslExchange(mechanism, this)
  }
}

/** One connection's authentication: each SaslAuthenticate request's bytes go to step(). */
export class SaslExchange {
  /** SCRAM after the first round: what the final round checks the proof against. */
  private scramFirst: {clientFirstBare: string; serverFirst: string; nonce: string; gs2Header: string} | undefined

  constructor(
    readonly mechanism: SaslMechanism,
    private readonly account: SaslAccount,
  ) {}

  step(bytes: Buffer): SaslStep {
    return this.mechanism === 'PLAIN' ? this.plain(bytes) : this.scramFirst ? this.scramFinal(bytes.toString('utf8')) : this.scramStart(bytes.toString('utf8'))
  }

  /** authzid NUL authcid NUL passwd; the authzid, if any, must be the user itself. */
  private plain(bytes: Buffer): SaslStep {
    const [authzid, username, password, ...rest] = bytes.toString('utf8').split('\u0000')
    const {user} = this.account
    if (rest.length > 0 || (authzid !== '' && authzid !== username) || username !== user.username || password !== user.password) {
      return {error: 'Authentication failed: Invalid username or password'}
    }
    return {reply: Buffer.alloc(0), done: true}
  }

  private get hash(): ScramHash {
    return SCRAM_HASH[this.mechanism as Exclude<SaslMechanism, 'PLAIN'>]
  }

  private scramFailed(): SaslStep {
    return {error: `Authentication failed during authentication due to invalid credentials with SASL mechanism ${this.mechanism}`}
  }

  /** client-first-message: gs2 header, then n=user,r=client nonce. */
  private scramStart(message: string): SaslStep {
    const gs2Header = GS2_HEADER.exec(message)?.[0]
    if (gs2Header === undefined) return this.scramFailed()
    const clientFirstBare = message.slice(gs2Header.length)
    const attrs = attributes(clientFirstBare)
    const clientNonce = attrs.get('r')
    if (saslName(attrs.get('n') ?? '') !== this.account.user.username || !clientNonce) return this.scramFailed()
    const nonce = clientNonce + randomBytes(18).toString('base64')
    const serverFirst = `r=${nonce},s=${this.account.scram[this.hash].salt.toString('base64')},i=${ITERATIONS}`
    this.scramFirst = {clientFirstBare, serverFirst, nonce, gs2Header}
    return {reply: Buffer.from(serverFirst), done: false}
  }

  /** client-final-message: c=base64(gs2 header),r=nonce,p=proof; the answer proves we know the credential too. */
  private scramFinal(message: string): SaslStep {
    const {clientFirstBare, serverFirst, nonce, gs2Header} = this.scramFirst!
    const proofAt = message.lastIndexOf(',p=')
    if (proofAt < 0) return this.scramFailed()
    const withoutProof = message.slice(0, proofAt)
    const attrs = attributes(withoutProof)
    if (attrs.get('c') !== Buffer.from(gs2Header).toString('base64') || attrs.get('r') !== nonce) return this.scramFailed()
    const hash = this.hash
    const {storedKey, serverKey} = this.account.scram[hash]
    const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`
    const signature = hmac(hash, storedKey, authMessage)
    const proof = Buffer.from(message.slice(proofAt + 3), 'base64')
    if (proof.length !== signature.length) return this.scramFailed()
    // ClientKey = ClientProof XOR ClientSignature, and H(ClientKey) must be the StoredKey.
    const clientKey = Buffer.from(proof.map((byte, i) => byte ^ signature[i]!))
    if (!timingSafeEqual(createHash(hash).update(clientKey).digest(), storedKey)) return this.scramFailed()
    return {reply: Buffer.from(`v=${hmac(hash, serverKey, authMessage).toString('base64')}`), done: true}
  }
}
