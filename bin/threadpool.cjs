// Sizes libuv's thread pool, which runs sharp's image pipelines and every asynchronous file
// operation: its default of 4 threads is what the concurrent decodes of an ingest or a server alone
// fill (data.concurrency defaults to 2 per core), and then shard writes and fsyncs took turns with
// decodes. Default decodes plus 4 threads for file I/O, unless UV_THREADPOOL_SIZE is set.
//
// CommonJS, loaded before anything else (by bin/run.cjs, or `node --require` for in-process
// benchmarks): libuv reads the variable once, when the pool starts, and Node's ESM loader starts it
// while it reads the first module.
const os = require('node:os')

process.env.UV_THREADPOOL_SIZE ??= String(2 * os.availableParallelism() + 4)
