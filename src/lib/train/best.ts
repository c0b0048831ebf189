// train.earlyStopping.restoreBest: the best epoch's model is saved beside the run while training, and
// becomes the run's model at the end, so the run keeps the weights its monitor liked best.
import {exists, joinPath, remove, swapDir} from '../storage/index.js'
import {RUN_FILES, type RunInfo} from '../model/run-dir.js'
import type {Executor} from './executor.js'

export class BestWeights {
  private readonly dir: string

  constructor(
    private readonly runDir: string,
    private readonly monitor: string | undefined,
  ) {
    this.dir = joinPath(runDir, RUN_FILES.bestModel)
  }

  /** Called when an epoch improved on the best so far: its weights are saved (a resumed run keeps the folder). */
  async improved(executor: Executor): Promise<void> {
    if (this.monitor) await executor.saveModel(this.dir)
  }

  /**
   * After the last epoch's model was saved: puts the best epoch's model in its place when that was an
   * earlier epoch, and says which epoch the run's model holds.
   */
  async finish(lastEpoch: number, best: {epoch: number} | undefined): Promise<NonNullable<RunInfo['kept']>> {
    const model = joinPath(this.runDir, RUN_FILES.model)
    if (this.monitor && best && best.epoch !== lastEpoch && (await exists(this.dir))) {
      await swapDir(this.dir, model)
      return {epoch: best.epoch, restored: true, monitor: this.monitor}
    }
    await remove(this.dir)
    return {epoch: lastEpoch, restored: false, ...(this.monitor ? {monitor: this.monitor} : {})}
  }
}
