// The Prometheus text parser and the histogram arithmetic, against hand-written expositions and
// hand-computed PromQL histogram_quantile values.
import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {counterIncrease, histogramIncrease, histogramOf, histogramQuantile, histogramsBy, mergeHistograms, type Bucket} from '../../../src/lib/monitor/histogram.js'
import {ExpositionError, parseExposition, select, sumOf} from '../../../src/lib/monitor/prom-text.js'

const TEXT = `# HELP http_requests_total The total number of HTTP requests.\\nSecond line with a \\\\ backslash.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000
# A plain comment
msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9
metric_without_timestamp_and_labels 12.47
something_weird{problem="division by zero"} +Inf -3982045
not_a_number NaN
negative_inf{a="b",} -Inf

# HELP lat Request latency.
# TYPE lat histogram
lat_bucket{le="0.05"} 24054
lat_bucket{le="0.1"} 33444
lat_bucket{le="0.2"} 100392
lat_bucket{le="0.5"} 129389
lat_bucket{le="1"} 133988
lat_bucket{le="+Inf"} 144320
lat_sum 53423
lat_count 144320
# TYPE rpc summary
rpc{quantile="0.5"} 4773
rpc_sum 1.7560473e+07
rpc_count 2693
`

describe('parseExposition', () => {
  const expo = parseExposition(TEXT)

  it('reads HELP (with escapes) and TYPE into families', () => {
    const family = expo.families.get('http_requests_total')!
    assert.equal(family.type, 'counter')
    assert.equal(family.help, 'The total number of HTTP requests.\nSecond line with a \\ backslash.')
    assert.equal(family.samples.length, 2)
    assert.equal(expo.families.get('lat')!.type, 'histogram')
    assert.equal(expo.families.get('rpc')!.type, 'summary')
  })

  it('reads labels, escapes, values and timestamps', () => {
    assert.deepEqual(select(expo, 'http_requests_total', {code: '400'}), [{name: 'http_requests_total', labels: {method: 'post', code: '400'}, value: 3, timestamp: 1395066363000}])
    const [ms] = select(expo, 'msdos_file_access_time_seconds')
    assert.deepEqual(ms!.labels, {path: 'C:\\DIR\\FILE.TXT', error: 'Cannot find file:\n"FILE.TXT"'})
    assert.equal(ms!.value, 1.458255915e9)
    assert.equal(select(expo, 'metric_without_timestamp_and_labels')[0]!.value, 12.47)
    assert.equal(select(expo, 'something_weird')[0]!.value, Number.POSITIVE_INFINITY)
    assert.equal(select(expo, 'something_weird')[0]!.timestamp, -3982045)
    assert.ok(Number.isNaN(select(expo, 'not_a_number')[0]!.value))
    assert.deepEqual(select(expo, 'negative_inf')[0]!.labels, {a: 'b'}, 'a trailing comma in the label set is allowed')
    assert.equal(sumOf(expo, 'http_requests_total'), 1030)
    assert.equal(sumOf(expo, 'http_requests_total', {code: /4../}), 3)
  })

  it('groups _bucket, _sum and _count samples under their histogram or summary family', () => {
    assert.equal(expo.families.get('lat')!.samples.length, 8)
    assert.equal(expo.families.get('rpc')!.samples.length, 3)
    assert.equal(expo.families.has('lat_bucket'), false)
  })

  it('reports the line of a malformed sample', () => {
    assert.throws(() => parseExposition('ok 1\nbad{le="1} 2\n'), (e: unknown) => e instanceof ExpositionError && e.line === 2 && /unterminated/.test(e.message))
    assert.throws(() => parseExposition('a 1\nb\n'), (e: unknown) => e instanceof ExpositionError && e.line === 2)
    assert.throws(() => parseExposition('x 0x10\n'), /invalid value/)
    assert.throws(() => parseExposition('x{1a="b"} 1\n'), /invalid label name/)
  })

  it('accepts an empty exposition and CRLF line ends', () => {
    assert.equal(parseExposition('').samples.length, 0)
    assert.equal(parseExposition('a 1\r\nb 2\r\n').samples.length, 2)
  })
})

/** Float results compared to 12 digits: the interpolation is exact maths, not exact binary. */
function near(actual: number, expected: number): void {
  assert.ok(Math.abs(actual - expected) < 1e-12, `${actual} is not ${expected}`)
}

const b = (pairs: Array<[number, number]>): Bucket[] => pairs.map(([le, count]) => ({le, count}))
const INF = Number.POSITIVE_INFINITY

describe('histogramQuantile (PromQL histogram_quantile)', () => {
  // 10 observations <= 0.1, 20 in (0.1, 0.2], 10 in (0.2, 0.5], 10 above 0.5.
  const buckets = b([[0.1, 10], [0.2, 30], [0.5, 40], [INF, 50]])

  it('interpolates linearly inside the bucket holding the rank', () => {
    // rank 25: bucket (0.1, 0.2] holds ranks 11..30, so 0.1 + 0.1 * (25 - 10) / 20.
    near(histogramQuantile(0.5, buckets), 0.175)
    // rank 5 in the first bucket, which starts at 0.
    near(histogramQuantile(0.1, buckets), 0.05)
    // rank 40 is the end of (0.2, 0.5].
    assert.equal(histogramQuantile(0.8, buckets), 0.5)
    assert.equal(histogramQuantile(0, buckets), 0)
  })

  it('answers the second-highest bound when the rank falls into +Inf', () => {
    assert.equal(histogramQuantile(0.99, buckets), 0.5)
    assert.equal(histogramQuantile(1, buckets), 0.5)
  })

  it('follows PromQL on the edge cases', () => {
    assert.equal(histogramQuantile(-0.1, buckets), Number.NEGATIVE_INFINITY)
    assert.equal(histogramQuantile(1.1, buckets), INF)
    assert.ok(Number.isNaN(histogramQuantile(Number.NaN, buckets)))
    assert.ok(Number.isNaN(histogramQuantile(0.5, b([[0.1, 1], [0.2, 2]]))), 'no +Inf bucket')
    assert.ok(Number.isNaN(histogramQuantile(0.5, b([[INF, 5]]))), 'a single bucket')
    assert.ok(Number.isNaN(histogramQuantile(0.5, b([[0.1, 0], [INF, 0]]))), 'no observations')
    // The lowest bucket with a bound <= 0 is answered as its bound.
    assert.equal(histogramQuantile(0.2, b([[-1, 5], [1, 10], [INF, 10]])), -1)
  })

  it('sorts buckets, adds equal bounds and repairs non-monotonic counts', () => {
    near(histogramQuantile(0.5, b([[INF, 50], [0.2, 30], [0.5, 40], [0.1, 10]])), 0.175)
    // 0.1 -> 10, 0.2 -> 8 (a racing scrape) is read as 10, 10: rank 6 of 12 is in the first bucket.
    near(histogramQuantile(0.5, b([[0.1, 10], [0.2, 8], [INF, 12]])), 0.06)
    near(histogramQuantile(0.5, b([[0.1, 5], [0.1, 5], [0.2, 20], [0.2, 10], [INF, 30], [INF, 20]])), 0.175)
  })
})

describe('histograms from an exposition', () => {
  const expo = parseExposition(`# TYPE d histogram
d_bucket{m="a",le="0.1"} 1
d_bucket{m="a",le="1"} 3
d_bucket{m="a",le="+Inf"} 4
d_sum{m="a"} 5
d_count{m="a"} 4
d_bucket{m="b",le="0.1"} 2
d_bucket{m="b",le="1"} 2
d_bucket{m="b",le="+Inf"} 6
d_sum{m="b"} 20
d_count{m="b"} 6
`)

  it('sums series by le (sum by (le)) and groups by labels', () => {
    assert.deepEqual(histogramOf(expo, 'd'), {buckets: b([[0.1, 3], [1, 5], [INF, 10]]), sum: 25, count: 10})
    assert.deepEqual(histogramOf(expo, 'd', {m: 'a'}).buckets, b([[0.1, 1], [1, 3], [INF, 4]]))
    const groups = histogramsBy(expo, 'd', ['m'])
    assert.deepEqual([...groups.values()].map((g) => [g.labels.m, g.data.count]), [['a', 4], ['b', 6]])
  })

  it('takes the increase between scrapes, and a reset as a restart', () => {
    const before = {buckets: b([[0.1, 1], [1, 2], [INF, 2]]), sum: 1, count: 2}
    const after = {buckets: b([[0.1, 3], [1, 5], [INF, 10]]), sum: 25, count: 10}
    assert.deepEqual(histogramIncrease(before, after), {buckets: b([[0.1, 2], [1, 3], [INF, 8]]), sum: 24, count: 8})
    assert.deepEqual(histogramIncrease(after, before), before, 'counts went down: the process restarted')
    assert.equal(counterIncrease(10, 15), 5)
    assert.equal(counterIncrease(10, 4), 4)
    assert.equal(counterIncrease(undefined, 4), 4)
    assert.deepEqual(mergeHistograms([before, after]), {buckets: b([[0.1, 4], [1, 7], [INF, 12]]), sum: 26, count: 12})
  })
})
