import type { ModelRunner } from '../engine/model-runner.js';
import type { GpuContext } from '../gpu/context.js';
import type { Logger } from '../util/logger.js';
import { calibrateCostModel, readCachedCostModel, writeCachedCostModel, type CostModelKey } from './cost-profiler.js';
import { OnlineCostModel } from './online-cost-model.js';
import { Scheduler, type SchedulerConfig } from './scheduler.js';
import type { SchedulerObserver } from './types.js';

/** Bump when kernels change enough that cached cost profiles no longer hold. */
export const ENGINE_COST_VERSION = '2';

export function costModelKey(ctx: GpuContext, runner: ModelRunner): CostModelKey {
  return { adapter: ctx.capabilities.adapterName, model: runner.checkpoint.config, dtype: runner.dtype, engineVersion: ENGINE_COST_VERSION };
}

/**
 * The online cost model as a server or worker starts it, never waiting for a
 * full profile: the cached model for this adapter, model and dtype when there
 * is one (converged from the start), else a short calibration (a few seconds)
 * that the model refines from every real batch. Once it converges, and every
 * window of batches after, it is written back to scheduler.costCacheDir, so the
 * next start reads it. `petserve profile` writes the full profile there instead.
 */
export async function createCostModel(
  ctx: GpuContext,
  runner: ModelRunner,
  config: Pick<SchedulerConfig, 'costCacheDir' | 'maxBatchTokens'>,
  logger: Logger,
): Promise<OnlineCostModel> {
  const key = costModelKey(ctx, runner);
  const cacheDir = config.costCacheDir;
  const cached = await readCachedCostModel(cacheDir, key);
  let model: OnlineCostModel;
  if (cached) {
    logger.info({ cacheDir }, 'cost model loaded from cache');
    model = new OnlineCostModel(cached, 'cache', { priorConverged: true });
  } else {
    const t0 = performance.now();
    const prior = await calibrateCostModel(runner, { maxTokens: config.maxBatchTokens });
    logger.info({ ms: Math.round(performance.now() - t0), prior }, 'cost model calibrated; refining it online from real batches');
    model = new OnlineCostModel(prior, 'calibration');
  }
  if (cacheDir) {
    let writing: Promise<unknown> = Promise.resolve();
    model.onUpdate((m) => {
      const { batches, recentError } = m.state();
      writing = writing
        .then(() => writeCachedCostModel(cacheDir, key, m.coef, { source: 'online', batches, recentError }))
        .then(
          (file) => logger.info({ file, batches, recentError }, 'cost model converged online; cached'),
          (err: unknown) => logger.warn({ err }, 'could not write the cost model cache'),
        );
    });
  }
  return model;
}

/** The scheduler as the server and workers start it (see createCostModel). */
export async function createScheduler(
  ctx: GpuContext,
  runner: ModelRunner,
  config: SchedulerConfig,
  opts: { logger: Logger; observer?: SchedulerObserver | undefined },
): Promise<Scheduler> {
  const cost = await createCostModel(ctx, runner, config, opts.logger);
  return new Scheduler(runner, config, { logger: opts.logger, cost, observer: opts.observer });
}
