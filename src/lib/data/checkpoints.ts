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

/**
 * The partitions whose recorded position in `latest` is not the one the committing member claims:
 * another member recorded them since this one read them, so this one lost them (a rebalance it has
 * not heard of yet) and its records and positions for them must not be committed.
 */
export function movedPartitions(latest: SourceCheckpoints | undefined, claims: SourceClaims | undefined): string[] {
  const moved: string[] = []
  for (const [group, topics] of Object.entries(claims?.kafka ?? {})) {
    for (const [topic, partitions] of Object.entries(topics)) {
      for (const [partition, claimed] of Object.entries(partitions)) {
        const actual = latest?.kafka?.[group]?.[topic]?.[partition] ?? null
        if (actual !== claimed) moved.push(`${topic}/${partition} (group ${group}: recorded ${actual ?? 'nothing'}, this member read ${claimed ?? 'nothing'})`)
      }
    }
  }
  return moved
}

/** The error of a member fenced out of a commit: see movedPartitions. Nothing of its pending work is published. */
export function fencedError(store: string, moved: string[]): UserError {
  return new UserError(
    `another member of the consumer group recorded ${moved.length === 1 ? 'a partition' : `${moved.length} partitions`} this ingest was still consuming: ` +
      `${moved.join(', ')}; this member lost ${moved.length === 1 ? 'it' : 'them'} in a rebalance and its uncommitted work was not published to ${store}`,
    {
      code: 'INGEST_FENCED',
      exit: 'service',
      details: {store, partitions: moved},
      suggestions: [
        'Nothing is lost or stored twice: the partitions\' new owners continue from the dataset\'s manifest. Start this ingest again ' +
          '(a supervisor such as Kubernetes does it), and give members a longer sessionTimeoutMs if they are often too slow to heartbeat.',
      ],
    },
  )
}
