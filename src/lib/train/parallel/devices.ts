// Counting the accelerators data-parallel training can use: GPUs when tfjs-node-gpu is installed
// (one worker per GPU, pinned with CUDA_VISIBLE_DEVICES), none otherwise.
import {execFile} from 'node:child_process'
import {hasTfjsNodeGpu} from '../../engine/gpus.js'

/** GPUs visible to this process (nvidia-smi -L), or 0 without tfjs-node-gpu or a driver. */
export async function countGpus(): Promise<number> {
  if (!hasTfjsNodeGpu()) return 0
  const visible = process.env.CUDA_VISIBLE_DEVICES
  if (visible !== undefined) return visible.split(',').filter((d) => d.trim() !== '' && d.trim() !== '-1').length
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['-L'], {timeout: 5000}, (error, stdout) => {
      resolve(error ? 0 : stdout.split('\n').filter((line) => line.startsWith('GPU ')).length)
    })
  })
}
