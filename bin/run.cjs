#!/usr/bin/env node
// Entry point of the `ml` command (compiled commands live in dist/src/commands). CommonJS so that
// libuv's pool is sized before any ES module is loaded (see threadpool.cjs).
require('./threadpool.cjs')

import('@oclif/core').then(({execute}) => execute({dir: __filename}))
