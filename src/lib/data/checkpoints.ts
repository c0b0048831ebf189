// Stream positions in a dataset manifest (SourceCheckpoints): merging a commit's positions into the
// latest manifest's, and the claims that fence a consumer-group member which lost a partition
// without noticing (a "zombie") out of the commit.
import {UserError} from '../errors.js'
import type {SourceCheckpoints, SourceClaims} from './types.js'

/** Deep-merges checkpoints; `b` wins where both name the same partition (or Kinesis stream). */
export function mergeCheckpoints(a: SourceCheckpoints | undefined, b: SourceCheckpoints): SourceCheckpoints {
  const kafka: NonNullable<SourceCheckpoints['kafka']> = {}
  for (const cp of [a?.kafka, b.kafka]) {
    for (const [group, topics] of Object.entries(cp ?? {})) {
      for (const [topic, partitions] of Object.entries(topics)) {
        kafka[group] ??= {}
        kafka[group][topic] = {...kafka[group][topic], ...partitions}
      }
    }
  }
  const merged: SourceCheckpoints = Object.keys(kafka).length > 0 ? {...a, ...b, kafka} : {...a, ...b}
  // Kinesis positions are per stream; each stream's own checkpoint already holds all its shards.
  if (a?.kinesis || b.kinesis) merged.kinesis = {...a?.kinesis, ...b.kinesis}
  return merged
}

/** Deep-merges claims; `b` wins where both name the same partition. */
export function mergeClaims(a: SourceClaims | undefined, b: SourceClaims): SourceClaims {
  const kafka: NonNullable<SourceClaims['kafka']> = {}
  for (const cp of [a?.kafka, b.kafka]) {
    for (const [group, topics] of Object.entries(cp ?? {})) {
      for (const [topic, partitions] of Object.entries(topics)) {
        kafka[group] ??= {}
        kafka[group][topic] = {...kafka[group][topic], ...partitions}
      }
    }
  }
  return Object.keys(kafka).length > 0 ? {kafka} : {}
}

/** A claimed partition that the latest manifest records differently, with what it records there. */
export interface MovedPartition {
  group: string
  topic: string
  partition: string
  claimed: string | null
  /** The partition's position in the latest manifest (null: none). */
  recorded: string | null
}

/**
 * The claimed partitions whose recorded position in `latest` is not the one the committing member
 * claims: another member recorded them since this one read them. Either a previous owner's commit
 * landed after this member read the partition (it holds records this member also read), or this
 * member lost the partition (a rebalance it has not heard of yet). Either way its records and
 * positions for them must not be committed.
 */
export function movedClaims(latest: SourceCheckpoints | undefined, claims: SourceClaims | undefined): MovedPartition[] {
  const moved: MovedPartition[] = []
  for (const [group, topics] of Object.entries(claims?.kafka ?? {})) {
    for (const [topic, partitions] of Object.entries(topics)) {
      for (const [partition, claimed] of Object.entries(partitions)) {
        const recorded = latest?.kafka?.[group]?.[topic]?.[partition] ?? null
        if (recorded !== claimed) moved.push({group, topic, partition, claimed, recorded})
      }
    }
  }
  return moved
}

/** The error of a member fenced out of a commit: see movedClaims. Nothing of its pending work is published. */
export function fencedError(store: string, moved: MovedPartition[]): UserError {
  const described = moved.map((m) => `${m.topic}/${m.partition} (group ${m.group}: recorded ${m.recorded ?? 'nothing'}, this member read ${m.claimed ?? 'nothing'})`)
  return new UserError(
    `another member of the consumer group recorded ${moved.length === 1 ? 'a partition' : `${moved.length} partitions`} this ingest was still consuming: ` +
      `${described.join(', ')}; this member lost ${moved.length === 1 ? 'it' : 'them'} in a rebalance and its uncommitted work was not published to ${store}`,
    {
      code: 'INGEST_FENCED',
      exit: 'service',
      details: {store, partitions: described, moved},
      suggestions: [
        'Nothing is lost or stored twice: the partitions\' new owners continue from the dataset\'s manifest. Start this ingest again ' +
          '(a supervisor such as Kubernetes does it), and give members a longer sessionTimeoutMs if they are often too slow to heartbeat.',
      ],
    },
  )
}

/** The partitions of an INGEST_FENCED error (see fencedError), else undefined. */
export function fencedMoves(error: unknown): MovedPartition[] | undefined {
  if (!(error instanceof UserError) || error.code !== 'INGEST_FENCED') return undefined
  return (error.details as {moved?: MovedPartition[]} | undefined)?.moved
}
