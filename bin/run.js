#!/usr/bin/env node
// Entry point of the `ml` command (compiled commands live in dist/src/commands).
import {execute} from '@oclif/core'

await execute({dir: import.meta.url})
