import type { ModelRunner } from '../engine/model-runner.js';
import type { GpuContext } from '../gpu/context.js';
import type { Logger } from '../util/logger.js';
import { loadOrProfileCostModel } from './cost-profiler.js';
import { Scheduler, type SchedulerConfig } from './scheduler.js';
import type { SchedulerObserver } from './types.js';

/** Bump when kernels change enough that cached cost profiles no longer hold. */
export const ENGINE_COST_VERSION = '2';

/**
 * The scheduler as the server and workers start it: the cost model is loaded
 * from scheduler.costCacheDir (keyed by adapter, model config and dtype) or
 * profiled on this device first, then the scheduler is ready.
 */
export async function createScheduler(
  ctx: GpuContext,
  runner: ModelRunner,
  config: SchedulerConfig,
  opts: { logger: Logger; observer?: SchedulerObserver | undefined },
): Promise<Scheduler> {
  const cost = await loadOrProfileCostModel(
    runner,
    { adapter: ctx.capabilities.adapterName, model: runner.checkpoint.config, dtype: runner.dtype, engineVersion: ENGINE_COST_VERSION },
    config.costCacheDir,
    { logger: opts.logger, maxTokens: config.maxBatchTokens },
  );
  return new Scheduler(runner, config, { logger: opts.logger, cost, observer: opts.observer });
}
