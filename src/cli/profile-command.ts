import type { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { ModelRunner } from '../engine/model-runner.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { TaskRegistry } from '../pet/registry.js';
import { ensureDemo } from '../runtime/demo.js';
import { encoderDtype } from '../runtime/dtype-choice.js';
import { profileCostModel, writeCachedCostModel, type ProfileProgress } from '../scheduler/cost-profiler.js';
import { costModelKey } from '../scheduler/create-scheduler.js';
import { createLogger } from '../util/logger.js';
import { withGpu } from './gpu-session.js';
import { startProgress } from './progress.js';

/**
 * `petserve profile`: the full cost-model profile, on demand. `serve` and
 * `worker` never wait for it (they calibrate in seconds and learn online); this
 * writes a fully profiled model to scheduler.costCacheDir, which the next start
 * reads as converged. Prints the cache file and coefficients as one JSON line.
 */
export function registerProfile(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('profile')
    .description(
      'time the full cost-model grid on this device and write it to scheduler.costCacheDir (about a minute on a 2-core CPU). ' +
        'serve and worker do not need it: they start from a few-second calibration and refine the model from every batch',
    )
    .option('--config <file>', 'YAML configuration file (configs/default.yaml documents every key)')
    .option('--model <dir>', 'Hugging Face BERT checkpoint directory (model.dir); default: the demo model')
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const config = loadConfig({ file: o['config'], env: process.env, overrides: { 'model.dir': o['model'] } });
        const logger = createLogger(config.log.level);
        const modelDir = config.model.dir ?? (await ensureDemo(config.server.demoDir, logger)).modelDir;
        const checkpoint = await loadCheckpoint(modelDir);
        const registry = new TaskRegistry(checkpoint, { logger, hostCacheBytes: config.pets.hostCacheBytes });
        const out = await withGpu(config, logger, async (ctx) => {
          const runner = await ModelRunner.create(ctx, checkpoint, { dtype: await encoderDtype(ctx, config.model.dtype, checkpoint, logger, config.kernels.cacheDir), logger, registry, poolBytes: config.pets.poolBytes });
          // The grid's points, on stderr (a live line on a terminal); stdout keeps the one JSON result line.
          const progress = startProgress({ label: 'petserve: profile', total: 0, unit: 'points' });
          try {
            const t0 = performance.now();
            const model = await profileCostModel(runner, {
              logger,
              maxTokens: config.scheduler.maxBatchTokens,
              onProgress: (p: ProfileProgress) => {
                logger.debug(p, 'cost profile point');
                progress.update({ done: p.done, total: p.total, note: p.what });
              },
            });
            progress.stop();
            const file = config.scheduler.costCacheDir
              ? await writeCachedCostModel(config.scheduler.costCacheDir, costModelKey(ctx, runner), model.coef, { source: 'profile' })
              : null;
            return { file, seconds: Math.round((performance.now() - t0) / 100) / 10, coef: model.coef };
          } finally {
            progress.stop();
            await runner.dispose();
          }
        });
        process.stdout.write(`${JSON.stringify(out)}\n`);
      }),
    );
}
