#!/usr/bin/env node
// Development entry point: same as run.js, with oclif's development mode (fuller stack traces).
import {execute} from '@oclif/core'

await execute({development: true, dir: import.meta.url})
