// What `ml train` shows while it runs: a start line, one backend notice, a step bar on a terminal and
// one line per epoch, all on stderr and each within 80 columns. Under --json the lines stay (a long run
// must not look dead) and the bar goes; --quiet drops both.
import type {EpochMetrics} from '../model/run-dir.js'
import {PACKAGE_NAME} from '../optional.js'
import type {TrainEvent} from '../train/trainer.js'
import {createProgress, fmt, type Progress} from './progress.js'

export interface TrainProgressOptions {
  /** Writes one line to stderr. */
  line: (text: string) => void
  /** The redrawing step bar (a terminal, not --json, not --quiet). */
  bar: boolean
  quiet: boolean
  /** Called with each epoch's metrics (tuning trials report them). */
  onEpoch?: (metrics: EpochMetrics) => void
  stream?: NodeJS.WriteStream
}

/**
 * The backend's notes as one line: "not installed" notes for the native packages and the "for native
 * speed" hint become one hint that says how to add tfjs-node for every kind of install; anything
 * else (a package that failed to load, a fallback) is kept.
 */
export function backendNotice(backend: string, notes: string[]): string[] {
  const routine = (n: string) => / is not installed\.$/.test(n) || /for native speed:/.test(n) || /runs on a single thread/.test(n)
  const other = notes.filter((n) => !routine(n))
  if (backend !== 'wasm' && backend !== 'cpu') return other
  const where = backend === 'wasm' ? 'wasm backend, one thread' : 'pure-JS cpu backend, slow'
  // The engine names the native package it looked for (the CPU one, not the CUDA one).
  const looked = notes.map((n) => / is not installed\.$/.test(n) ? n.split(' ')[0]! : undefined).filter((n): n is string => n !== undefined)
  const native = looked.find((n) => !n.endsWith('-gpu'))
  if (!native) return notes
  const NATIVE = native
  return [
    `${where}; faster: npm i ${NATIVE} next to ml (-g if global; npx: npx -p ${PACKAGE_NAME} -p ${NATIVE} ml train)`,
    ...other,
  ]
}

export function epochLine(m: EpochMetrics, epochs: number): string {
  // Within 80 columns up to "epoch 100/100" and 99,999 img/s; the epoch's seconds are in metrics.jsonl.
  return `epoch ${m.epoch}/${epochs} loss ${fmt(m.loss)} acc ${fmt(m.accuracy)} val_loss ${fmt(m.valLoss)} val_acc ${fmt(m.valAccuracy)} ${m.imagesPerSec.toFixed(0)} img/s`
}

/** Renders training events; stop() clears the bar (call it in a finally). */
export function trainProgress(options: TrainProgressOptions): {onEvent: (event: TrainEvent) => void; stop: () => void} {
  const line = (text: string) => {
    if (!options.quiet) options.line(text)
  }
  let progress: Progress | undefined
  let epochs = 0
  const onEvent = (event: TrainEvent) => {
    switch (event.type) {
      case 'start': {
        epochs = event.epochs
        line(`run ${event.runId} (${event.resumed ? `resumed at epoch ${event.startEpoch + 1}` : 'new'}) on ${event.backend}${event.workers > 1 ? `, ${event.workers} workers` : ''}`)
        for (const n of backendNotice(event.backend, event.notes)) line(`  ${n}`)
        line(`  ${event.params.toLocaleString('en-US')} parameters, ${event.trainCount} train / ${event.validationCount} validation images, ${event.steps} steps/epoch`)
        break
      }
      case 'step': {
        if (event.step === 0 || !progress) {
          progress?.stop()
          progress = createProgress({
            label: `epoch ${event.epoch + 1}/${epochs}`,
            unit: 'step',
            total: event.steps,
            enabled: options.bar && !options.quiet,
            statusWidth: 'loss 0.0000 acc 0.0000'.length,
            ...(options.stream ? {stream: options.stream} : {}),
          })
        }
        progress.update(event.step + 1, `loss ${fmt(event.loss)} acc ${fmt(event.accuracy)}`)
        break
      }
      case 'epoch': {
        progress?.stop()
        progress = undefined
        options.onEpoch?.(event.metrics)
        line(epochLine(event.metrics, event.epochs))
        break
      }
      case 'early-stop': {
        line(`early stop after epoch ${event.epoch}: no improvement for ${event.patience} epochs`)
        break
      }
    }
  }
  return {onEvent, stop: () => progress?.stop()}
}
