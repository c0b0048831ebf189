// The follower shared by Vertex AI and SageMaker jobs, on scripted reads: retries, giving up, final
// states, Ctrl-C (abort) while reading or waiting, and the question asked once a job is interrupted.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {UserError} from '../../../src/lib/errors.js'
import {followRemoteJob, interruptedJob, pollIntervalFrom, type InterruptedJob, type RemoteJobUi} from '../../../src/lib/train/remote-job.js'

type View = {state: string; step: number}

class Unavailable extends Error {}

/** A read that plays `script` in order (a state, or an error to throw) and counts its calls. */
function scripted(script: Array<string | Error>) {
  const reads = {count: 0}
  const read = async (): Promise<View> => {
    const next = script[Math.min(reads.count, script.length - 1)]!
    reads.count++
    if (next instanceof Error) throw next
    return {state: next, step: reads.count}
  }
  return {read, reads}
}

const FINAL = new Set(['DONE', 'FAILED'])
const isTransient = (error: unknown) => error instanceof Unavailable
/** Tiny polls: the tests never wait on time, only on the order of reads. */
const base = {finalStates: FINAL, isTransient, pollMs: 1}
/** So long that a test ending at all shows the wait was cut short by the abort. */
const NEVER_MS = 600_000

describe('following a remote job', () => {
  it('retries transient read errors and ends at the first final state', async () => {
    const {read, reads} = scripted([new Unavailable('503'), new Unavailable('503'), 'QUEUED', 'RUNNING', 'RUNNING', 'DONE', 'RUNNING'])
    const states: string[] = []
    const seen: number[] = []
    const view = await followRemoteJob(read, {...base, maxFailures: 3, onState: (v) => states.push(v.state), onRead: (v) => seen.push(v.step)})
    assert.deepEqual(view, {state: 'DONE', step: 6})
    assert.equal(reads.count, 6, 'no read after the final state')
    assert.deepEqual(states, ['QUEUED', 'RUNNING', 'DONE'], 'onState: each state once, the first read included')
    assert.deepEqual(seen, [3, 4, 5, 6], 'onRead: every view read')
  })

  it('gives up after maxFailures transient errors in a row, with the last error', async () => {
    const errors = [new Unavailable('first'), new Unavailable('second'), new Unavailable('third'), new Unavailable('fourth')]
    const {read, reads} = scripted(['RUNNING', errors[0]!, errors[1]!, 'RUNNING', ...errors.slice(1)])
    await assert.rejects(followRemoteJob(read, {...base, maxFailures: 3}), (error) => error === errors[3])
    assert.equal(reads.count, 7, 'a good read in between starts the count again')
  })

  it('ends at once on an error that is not transient', async () => {
    const fatal = new Error('no such job')
    const {read, reads} = scripted([new Unavailable('503'), fatal, 'DONE'])
    await assert.rejects(followRemoteJob(read, base), (error) => error === fatal)
    assert.equal(reads.count, 2)
  })

  it('returns the view just read when aborted during the read', async () => {
    const controller = new AbortController()
    const {read, reads} = scripted(['QUEUED', 'RUNNING', 'RUNNING'])
    const onRead = (v: View) => {
      if (v.step === 2) controller.abort()
    }
    const view = await followRemoteJob(read, {...base, signal: controller.signal, onRead})
    assert.deepEqual(view, {state: 'RUNNING', step: 2})
    assert.equal(reads.count, 2)
  })

  it('returns the last view when aborted while waiting for the next read', {timeout: 60_000}, async () => {
    const controller = new AbortController()
    const {read, reads} = scripted(['QUEUED', 'RUNNING'])
    // Aborts once the follower, right after this callback, has started waiting.
    const onRead = () => void Promise.resolve().then(() => controller.abort())
    const view = await followRemoteJob(read, {...base, pollMs: NEVER_MS, signal: controller.signal, onRead})
    assert.deepEqual(view, {state: 'QUEUED', step: 1})
    assert.equal(reads.count, 1)
  })

  it('returns the last view, without another read, when aborted while waiting out a transient error', async () => {
    const controller = new AbortController()
    const unavailable = new Unavailable('503')
    const {read, reads} = scripted(['RUNNING', unavailable, 'DONE'])
    const isTransientThenAbort = (error: unknown) => {
      void Promise.resolve().then(() => controller.abort())
      return isTransient(error)
    }
    const view = await followRemoteJob(read, {...base, isTransient: isTransientThenAbort, signal: controller.signal})
    assert.deepEqual(view, {state: 'RUNNING', step: 1})
    assert.equal(reads.count, 2)
  })

  it('reads the poll interval from the service variable, at least 10 ms, else every 15 s', () => {
    assert.equal(pollIntervalFrom('ML_X_POLL_MS', {ML_X_POLL_MS: '40'}), 40)
    assert.equal(pollIntervalFrom('ML_X_POLL_MS', {ML_X_POLL_MS: '1'}), 10)
    assert.equal(pollIntervalFrom('ML_X_POLL_MS', {ML_X_POLL_MS: 'soon'}), 15_000)
    assert.equal(pollIntervalFrom('ML_X_POLL_MS', {ML_Y_POLL_MS: '40'}), 15_000)
  })
})

describe('a followed job interrupted by Ctrl-C', () => {
  function setUp(answer?: boolean) {
    const notes: string[] = []
    const questions: string[] = []
    let ended = 0
    const ui: Pick<RemoteJobUi, 'note' | 'ask'> = {
      note: (m) => void notes.push(m),
      ...(answer === undefined
        ? {}
        : {
            ask: async (question: string) => {
              questions.push(question)
              return answer
            },
          }),
    }
    const job: InterruptedJob = {
      service: 'SageMaker',
      kind: 'training job',
      name: 'digits-1',
      verb: 'stop',
      lookAgain: 'see it with',
      end: async () => {
        ended++
        return {state: 'Stopping'}
      },
      details: {job: 'digits-1', state: 'InProgress', outputDir: 's3://b/o'},
    }
    return {ui, job, notes, questions, ended: () => ended}
  }

  it('off a terminal: ends the job without asking and exits 130 in the service\'s words', async () => {
    const {ui, job, notes, ended} = setUp()
    await assert.rejects(interruptedJob(ui, job), (error: unknown) => {
      assert.ok(error instanceof UserError)
      assert.equal(error.code, 'INTERRUPTED')
      assert.equal(error.exitCode, 130)
      assert.equal(error.message, 'interrupted: SageMaker training job digits-1 was stopped (Stopping)')
      assert.deepEqual(error.details, {job: 'digits-1', state: 'Stopping', outputDir: 's3://b/o'})
      return true
    })
    assert.equal(ended(), 1)
    assert.deepEqual(notes, ['interrupted (not a terminal, so not asking): stopping training job digits-1'])
  })

  it('on a terminal answered no: leaves the job running', async () => {
    const {ui, job, notes, questions, ended} = setUp(false)
    assert.equal(await interruptedJob(ui, {...job, service: 'Vertex AI', kind: 'job', verb: 'cancel', lookAgain: 'follow it with'}), undefined)
    assert.deepEqual(questions, ['Cancel Vertex AI job digits-1? [y/N] '])
    assert.deepEqual(notes, ['job digits-1 keeps running; follow it with `ml train status digits-1`'])
    assert.equal(ended(), 0)
  })

  it('on a terminal answered yes: cancels the job, without a note', async () => {
    const {ui, job, notes, ended} = setUp(true)
    await assert.rejects(interruptedJob(ui, {...job, service: 'Vertex AI', kind: 'job', verb: 'cancel'}), /: interrupted: Vertex AI job digits-1 was cancelled \(Stopping\)$/)
    assert.equal(ended(), 1)
    assert.deepEqual(notes, [])
  })
})
