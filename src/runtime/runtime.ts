// Bootstrap of everything that answers inference requests, without HTTP: the
// HTTP server and the queue workers both start from here, so a task directory,
// the demo default and the GPU are set up the same way for both.

import type { PetServeConfig } from '../config/config.js';
import { ModelRunner } from '../engine/model-runner.js';
import { GpuContext } from '../gpu/context.js';
import { loadCheckpoint, type BertCheckpoint } from '../model/checkpoint.js';
import { DevicePetPool } from '../pet/device-pool.js';
import { TaskRegistry } from '../pet/registry.js';
import { createScheduler } from '../scheduler/create-scheduler.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { SchedulerObserver } from '../scheduler/types.js';
import { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { ConfigError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { DEMO_MODEL_ID, ensureDemo } from './demo.js';
import { encoderDtype } from './dtype-choice.js';
import { KernelTuning, kernelTuningConfig } from './kernel-tuning.js';
import { registerTaskDirectories, taskDirectoryNames } from './task-dirs.js';

export interface Runtime {
  ctx: GpuContext;
  checkpoint: BertCheckpoint;
  registry: TaskRegistry;
  runner: ModelRunner;
  scheduler: Scheduler;
  /**
   * The device's one PET pool (pets.poolBytes): the encoder's tasks page through it, and a
   * decoder served on the same device (startServedGeneration) pages its adapters through it too.
   */
  pool: DevicePetPool;
  /** The encoder's kernel self-tuning (cached pick applied; background run when none). */
  kernelTuning: KernelTuning;
  /** Null when the checkpoint ships no tokenizer.json (then only token ids are accepted). */
  tokenizer: TextTokenizer | null;
  /** True when serving the generated demo model (no model.dir configured). */
  demo: boolean;
  /**
   * Reject what is still queued, release the model's GPU memory and destroy the
   * device. Drain the scheduler first for a graceful stop. Idempotent.
   */
  close(): Promise<void>;
}

export interface RuntimeOptions {
  observer?: SchedulerObserver;
  /**
   * Register the tasks of server.tasksDir (or the demo's) and server.uploadDir
   * at start (default true). Queue workers and servers both want them.
   */
  registerTasks?: boolean;
}

export async function startRuntime(config: PetServeConfig, logger: Logger, opts: RuntimeOptions = {}): Promise<Runtime> {
  let modelDir = config.model.dir;
  let tasksDir = config.server.tasksDir;
  const demo = modelDir === null;
  if (modelDir === null) {
    const layout = await ensureDemo(config.server.demoDir, logger);
    modelDir = layout.modelDir;
    tasksDir ??= layout.tasksDir;
  }
  const checkpoint = await loadCheckpoint(modelDir);
  const tokenizer = await TextTokenizer.load(modelDir);
  if (!tokenizer) logger.warn({ modelDir }, 'the checkpoint has no tokenizer.json: text inputs are refused, token ids accepted');
  const registry = new TaskRegistry(checkpoint, {
    logger,
    hostCacheBytes: config.pets.hostCacheBytes,
    baseModelId: config.model.id ?? (demo ? DEMO_MODEL_ID : undefined),
  });
  if (opts.registerTasks !== false) {
    await refuseTaskNamedLikeBase(registry.baseModelId, [tasksDir, config.server.uploadDir]);
    if (tasksDir !== null) await registerTaskDirectories(registry, tasksDir, { logger, onInvalid: 'fail' });
    // Uploaded tasks outlive a restart; one that no longer loads is reported, not fatal.
    await registerTaskDirectories(registry, config.server.uploadDir, { logger, onInvalid: 'skip', missingOk: true });
  }

  const ctx = await GpuContext.create(
    {
      backend: config.gpu.backend ?? undefined,
      adapter: config.gpu.adapter ?? undefined,
      powerPreference: config.gpu.powerPreference,
      dawnToggles: config.gpu.dawnToggles,
    },
    logger,
  );
  let pool: DevicePetPool | null = null;
  let runner: ModelRunner | null = null;
  try {
    const dtype = await encoderDtype(ctx, config.model.dtype, checkpoint, logger, config.kernels.cacheDir);
    pool = new DevicePetPool(ctx, dtype, config.pets.poolBytes, logger);
    runner = await ModelRunner.create(ctx, checkpoint, { dtype, logger, registry, pool });
    // Before the cost model's calibration, so a cached pick is what it calibrates.
    const kernelTuning = await KernelTuning.start(ctx, runner, kernelTuningConfig(config), logger);
    const scheduler = await createScheduler(ctx, runner, config.scheduler, { logger, observer: opts.observer });
    kernelTuning.setIdleProbe(() => {
      const s = scheduler.stats();
      return s.queued === 0 && s.inFlightBatches === 0;
    });
    logger.info(
      { modelDir, modelId: registry.baseModelId, demo, adapter: ctx.capabilities.adapterName, dtype, tasks: registry.list().map((t) => t.id) },
      'runtime ready',
    );
    const ownedRunner = runner;
    const ownedPool = pool;
    let closed: Promise<void> | null = null;
    return {
      ctx,
      checkpoint,
      registry,
      runner: ownedRunner,
      pool: ownedPool,
      scheduler,
      kernelTuning,
      tokenizer,
      demo,
      close: () =>
        (closed ??= (async () => {
          await kernelTuning.stop();
          await scheduler.close();
          await ownedRunner.dispose();
          ownedPool.destroy();
          ctx.destroy();
          logger.info('GPU released');
        })()),
    };
  } catch (err) {
    await runner?.dispose().catch(() => undefined);
    pool?.destroy();
    ctx.destroy();
    throw err;
  }
}

/**
 * A task directory named like the base model would shadow it (or be shadowed)
 * on every route: refuse to start rather than skip the task, since the
 * operator meant one of the two and we cannot tell which.
 */
async function refuseTaskNamedLikeBase(modelId: string, roots: readonly (string | null)[]): Promise<void> {
  for (const root of roots) {
    if (root === null) continue;
    if ((await taskDirectoryNames(root, true)).includes(modelId)) {
      throw new ConfigError(`model id '${modelId}' is also a task directory in ${root}; set model.id (PETSERVE_MODEL_ID) to another id or rename the task`);
    }
  }
}
