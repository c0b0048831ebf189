// The page on GET / driven in headless Chromium (Debian's chromium with playwright-core, no browser
// download): real MNIST digits uploaded through the file input, the label the page shows compared
// with the KServe V2 API's own answer. Without chromium the test is skipped locally, and fails under CI.
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'
import {validate, compileErrors} from '@readme/openapi-parser'
import type {Browser} from 'playwright-core'
import {JsonLog} from '../../src/lib/serve/log.js'
import {serveOptions} from '../../src/lib/serve/options.js'
import {startServer, type ServeHandle} from '../../src/lib/serve/server.js'
import {tempDir} from '../support/fixtures.js'
import {request, testDigits, trainServeModel} from '../support/serve-fixtures.js'

const CHROMIUM = process.env.ML_CHROMIUM ?? '/usr/bin/chromium'
const TOKEN_ENV = 'ML_TEST_PAGE_TOKEN'
const TOKEN = 'page-test-token'
const missing = existsSync(CHROMIUM) ? undefined : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set ML_CHROMIUM)`
if (missing && process.env.CI === 'true') throw new Error(`${missing}: CI runs the browser test`)

describe('the page on GET /', () => {
  let cleanup: () => Promise<void>
  let server: ServeHandle
  let digits: Array<{label: string; png: Buffer}>
  let browser: Browser | undefined

  before(async () => {
    const temp = await tempDir('ml-serve-page-')
    cleanup = temp.cleanup
    process.env[TOKEN_ENV] = TOKEN
    const model = await trainServeModel(temp.dir)
    digits = await testDigits(temp.dir, 1)
    server = await startServer(serveOptions({repository: model.repository, port: 0, instances: 1, pollIntervalMs: 0, accessLog: 'off', engine: 'wasm', auth: {tokenEnv: TOKEN_ENV}}), {log: new JsonLog(undefined)})
  })

  after(async () => {
    await browser?.close()
    await server?.close()
    await cleanup?.()
    delete process.env[TOKEN_ENV]
  })

  it('is one self-contained HTML answer, open with auth on, with a strict Content-Security-Policy', async () => {
    const page = await request(`${server.url}/`)
    assert.equal(page.status, 200)
    assert.match(page.headers['content-type']!, /^text\/html/)
    const csp = page.headers['content-security-policy'] as string
    assert.match(csp, /default-src 'none'/)
    assert.match(csp, /connect-src 'self'/)
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/]+=*'/)
    assert.doesNotMatch(page.text, /https?:\/\/|<script src|<link /, 'no external resources')
    assert.equal((await request(`${server.url}/`, {method: 'POST', body: {}})).status, 405)
    // The API itself still needs the token.
    assert.equal((await request(`${server.url}/v2/repository/index`, {method: 'POST', body: {}})).status, 401)
  })

  it('/openapi.json is open, valid OpenAPI 3.1, and declares the bearer token', async () => {
    const doc = await request(`${server.url}/openapi.json`)
    assert.equal(doc.status, 200)
    const result = await validate(structuredClone(doc.json))
    assert.ok(result.valid, result.valid ? '' : compileErrors(result))
    assert.deepEqual(doc.json.security, [{bearer: []}])
    assert.deepEqual(doc.json.paths['/healthz'].get.security, [])
    assert.equal(doc.json.paths['/v2/models/{model}/infer'].post.security, undefined, 'inference needs the token')
    assert.ok(doc.json.paths['/v2/models/{model}/infer'].post.responses['401'])
  })

  it('shows the label the API answers for real MNIST digits', {skip: missing, timeout: 120_000}, async () => {
    const {chromium} = await import('playwright-core')
    browser = await chromium.launch({executablePath: CHROMIUM, args: ['--disable-gpu', '--disable-dev-shm-usage']})
    const page = await browser.newPage()
    const origin = new URL(server.url).origin
    const elsewhere: string[] = []
    const problems: string[] = []
    page.on('request', (r) => {
      if (!r.url().startsWith(origin) && !r.url().startsWith('blob:') && !r.url().startsWith('data:')) elsewhere.push(r.url())
    })
    page.on('console', (m) => {
      // The first index request goes without the token, on purpose: its 401 is the browser's console line.
      if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(m.text())
    })
    page.on('pageerror', (e) => problems.push(e.message))
    await page.goto(`${server.url}/`)
    // Without the token the page says it needs one; with it, the models load.
    await page.waitForSelector('body[data-ready="false"]')
    assert.match(await page.textContent('#status') ?? '', /needs a token/)
    await page.fill('#token', TOKEN)
    await page.dispatchEvent('#token', 'change')
    await page.waitForSelector('body[data-ready="true"]')
    assert.equal(await page.inputValue('#model'), 'digits')
    const auth = {Authorization: `Bearer ${TOKEN}`}
    for (const digit of [digits[0]!, digits[3]!, digits[7]!]) {
      await page.evaluate('delete document.body.dataset.state')
      await page.setInputFiles('#file', {name: `digit-${digit.label}.png`, mimeType: 'image/png', buffer: digit.png})
      await page.waitForSelector('body[data-state="answered"]')
      const shown = await page.textContent('#top')
      const api = await request(`${server.url}/v2/models/digits/infer`, {
        headers: auth,
        body: {inputs: [{name: 'image', shape: [1], datatype: 'BYTES', data: [digit.png.toString('base64')]}], outputs: [{name: 'probabilities', parameters: {classification: 5}}]},
      })
      assert.equal(api.status, 200, api.text)
      const top = (api.json.outputs[0].data[0] as string).split(':').slice(2).join(':')
      assert.equal(shown, top, `digit ${digit.label}: the page shows ${shown}, the API answers ${top}`)
      assert.equal(await page.locator('#rows tr').count(), 5)
      assert.match(await page.textContent('#summary') ?? '', /^Model digits, version 1, \d+\.\d ms$/)
    }
    assert.deepEqual(elsewhere, [], 'the page fetched nothing from another host')
    assert.deepEqual(problems, [], 'no script errors or CSP violations')
  })
})
