// The storage layer's promises on an object store, written once and run on each: the Cloud Storage
// stand-in (test/lib/cloud/storage.test.ts), fake-gcs-server (test/peers/gcs.test.ts) and moto's S3
// (test/lib/aws/s3-storage.test.ts). Each file adds what only its store shows.
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import {exists, fileSize, listEntries, listNames, localCopy, openRead, readBytes, readJson, readText, remove, walkFiles, writeFileAtomic} from '../../src/lib/storage/index.js'

/** The bucket a scenario runs in, with what the test reads straight from the store. */
export interface StoreUnderTest {
  /** The URI of a key: gs://<bucket>/<key> or s3://<bucket>/<key>. */
  uri(key: string): string
  /** Object names under a prefix. */
  names(prefix: string): Promise<string[]>
  /** An object's Content-Type, where the stand-in keeps it. */
  contentType?(key: string): Promise<string | undefined>
  /** An object's bytes. */
  bytes(key: string): Promise<Buffer | undefined>
}

export async function drain(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Write, read, list, walk, exists and remove under round/, which is gone again afterwards. */
export async function roundTrip(store: StoreUnderTest): Promise<void> {
  const uri = (key: string) => store.uri(key)
  await writeFileAtomic(uri('round/a.json'), JSON.stringify({a: 1}))
  await writeFileAtomic(uri('round/sub/b.bin'), new Uint8Array([1, 2, 3]))
  await writeFileAtomic(uri('round/sub/deeper/c.txt'), 'c')
  assert.deepEqual(await readJson(uri('round/a.json')), {a: 1})
  assert.deepEqual([...(await readBytes(uri('round/sub/b.bin')))], [1, 2, 3])
  assert.equal(await readText(uri('round/sub/deeper/c.txt')), 'c')
  assert.deepEqual(await store.bytes('round/sub/b.bin'), Buffer.from([1, 2, 3]), 'the store holds what was written')
  assert.equal(await fileSize(uri('round/sub/b.bin')), 3)
  assert.equal(await fileSize(uri('round/missing')), undefined)
  assert.deepEqual(await listNames(uri('round')), ['a.json', 'sub'])
  assert.deepEqual(await listNames(uri('round/sub')), ['b.bin', 'deeper'])
  assert.deepEqual(await listEntries(uri('round/sub')), [
    {name: 'b.bin', kind: 'file', size: 3},
    {name: 'deeper', kind: 'folder'},
  ])
  assert.deepEqual(await listNames(uri('nothing-here')), [])
  assert.equal(await exists(uri('round')), true)
  assert.equal(await exists(uri('round/a.json')), true)
  assert.equal(await exists(uri('round/sub')), true, 'a prefix with objects under it is a folder')
  assert.equal(await exists(uri('round/su')), false, 'a partial name is not a folder')
  const walked = []
  for await (const file of walkFiles(uri('round'))) walked.push(file)
  assert.deepEqual(walked, [
    {path: uri('round/a.json'), size: 7},
    {path: uri('round/sub/b.bin'), size: 3},
    {path: uri('round/sub/deeper/c.txt'), size: 1},
  ])
  if (store.contentType) assert.equal(await store.contentType('round/a.json'), 'application/json')
  await remove(uri('round/sub'))
  assert.deepEqual(await store.names('round/'), ['round/a.json'])
  await remove(uri('round'))
  assert.deepEqual(await store.names('round/'), [])
  assert.equal(await exists(uri('round')), false)
  await remove(uri('round')) // missing is fine
}

/** Streamed reads and local copies of a 300 KB object. */
export async function streamsAndCopies(store: StoreUnderTest): Promise<void> {
  const data = randomBytes(300_000)
  await writeFileAtomic(store.uri('stream/blob'), data)
  assert.deepEqual(await drain(await openRead(store.uri('stream/blob'))), data)
  const copy = await localCopy(store.uri('stream/blob'))
  assert.deepEqual(await readFile(copy.path), data)
  await copy.release()
}
