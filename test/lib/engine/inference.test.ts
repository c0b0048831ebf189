import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {onnxAvailability, planThreads, selectInference, type OnnxAvailability} from '../../../src/lib/engine/inference.js'

const cpu: OnnxAvailability = {available: true, version: '1.30.0', providers: ['cpu'], notes: []}
const cuda: OnnxAvailability = {available: true, version: '1.30.0', providers: ['cuda', 'cpu'], notes: []}
const missing: OnnxAvailability = {available: false, providers: [], notes: ['onnxruntime-node is not installed: ...']}

describe('the inference engine choice', () => {
  it('prefers ONNX Runtime (CUDA when installed) for a model with an ONNX graph', () => {
    assert.deepEqual(selectInference('auto', {hasOnnx: true}, cpu), {runtime: 'onnx', label: 'onnxruntime (cpu)', providers: ['cpu'], notes: []})
    assert.equal(selectInference('auto', {hasOnnx: true}, cuda).label, 'onnxruntime (cuda)')
    assert.deepEqual(selectInference('auto', {hasOnnx: true}, cuda).providers, ['cuda', 'cpu'])
  })

  it('falls back to TensorFlow.js, saying why: no onnxruntime-node, no ONNX graph, or asked for', () => {
    const absent = selectInference('auto', {hasOnnx: true}, missing)
    assert.equal(absent.runtime, 'tfjs')
    assert.deepEqual(absent.notes, missing.notes)
    const unsupported = selectInference('auto', {hasOnnx: false, onnxUnsupported: 'layer "x" (Foo)'}, cpu)
    assert.equal(unsupported.runtime, 'tfjs')
    assert.deepEqual(unsupported.notes, ['layer "x" (Foo)'])
    assert.equal(selectInference('tfjs', {hasOnnx: true}, cpu).runtime, 'tfjs')
  })

  it('finds onnxruntime-node here, on the CPU', async () => {
    const found = await onnxAvailability()
    assert.equal(found.available, true, found.notes.join('; '))
    assert.deepEqual(found.providers.at(-1), 'cpu')
    assert.match(found.version!, /^\d+\.\d+\.\d+/)
  })

  it('sizes instances x threads x processes to the cores, leaving each event loop a core', () => {
    assert.deepEqual(planThreads(2, 1, {instances: 'auto', threads: 'auto'}), {instances: 1, threads: 1, processes: 1, reservedCores: 1})
    assert.deepEqual(planThreads(1, 1, {instances: 'auto', threads: 'auto'}), {instances: 1, threads: 1, processes: 1, reservedCores: 0})
    assert.deepEqual(planThreads(16, 1, {instances: 'auto', threads: 'auto'}), {instances: 15, threads: 1, processes: 1, reservedCores: 1})
    assert.deepEqual(planThreads(16, 1, {instances: 'auto', threads: 4}), {instances: 3, threads: 4, processes: 1, reservedCores: 1})
    assert.deepEqual(planThreads(16, 1, {instances: 3, threads: 'auto'}), {instances: 3, threads: 5, processes: 1, reservedCores: 1})
    assert.deepEqual(planThreads(16, 4, {instances: 'auto', threads: 'auto'}), {instances: 3, threads: 1, processes: 4, reservedCores: 4})
    // Explicit settings win, even past the cores.
    assert.deepEqual(planThreads(2, 1, {instances: 4, threads: 2}), {instances: 4, threads: 2, processes: 1, reservedCores: 1})
    for (const cores of [1, 2, 3, 4, 8, 64]) {
      for (const processes of [1, 2, 4]) {
        const plan = planThreads(cores, processes, {instances: 'auto', threads: 'auto'})
        assert.ok(plan.instances * plan.threads * processes <= Math.max(processes, cores - plan.reservedCores), `${cores} cores, ${processes} processes: ${JSON.stringify(plan)}`)
      }
    }
  })
})
