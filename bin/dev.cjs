#!/usr/bin/env node
// Development entry point: same as run.cjs, with oclif's development mode (fuller stack traces).
require('./threadpool.cjs')

import('@oclif/core').then(({execute}) => execute({development: true, dir: __filename}))
