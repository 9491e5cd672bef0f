import type { Command } from 'commander';
import { loadConfig, type PetServeConfig } from '../config/config.js';
import { Registry } from 'prom-client';
import { GenerationMetrics } from '../metrics/generation.js';
import { serveMetrics } from '../metrics/serve.js';
import { createMetrics } from '../metrics/metrics.js';
import { redactRedisUrl } from '../queue/redis.js';
import { batchQueueSettings } from '../queue/settings.js';
import { WorkerTaskSync } from '../queue/task-sync.js';
import { decoderCatalogTarget, openSharedCatalog } from './shared-catalog.js';
import { BatchWorker } from '../queue/worker.js';
import { startRuntime } from '../runtime/runtime.js';
import { startServedGeneration } from '../runtime/served-generation.js';
import { InferenceGateway } from '../gateway/gateway.js';
import { createLogger, type Logger } from '../util/logger.js';
import { parseIntOption } from './options.js';

export interface WorkerRunOptions {
  lockDurationMs?: number | undefined;
  stalledIntervalMs?: number | undefined;
}

export function registerWorker(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('worker')
    .description(
      'run offline batch chunks from Redis (REDIS_URL) on this machine\'s GPU until SIGTERM/SIGINT. ' +
        'Start as many as you like, here or on other machines pointing at the same Redis; ' +
        'each needs the same model and task directories as the server',
    )
    .option('--config <file>', 'YAML configuration file (configs/default.yaml documents every key)')
    .option('--model <dir>', 'Hugging Face BERT checkpoint directory (model.dir)')
    .option('--tasks-dir <dir>', 'task directories, as given to the server (server.tasksDir)')
    .option('--generation-model <dir>', 'also answer chat/completions batch lines with this causal decoder (generation.modelDir), as the server serves it')
    .option('--redis-url <url>', 'Redis of the batch queue (redis.url, REDIS_URL)')
    .option('--concurrency <n>', 'chunks run at once (batches.workerConcurrency)')
    .option('--lock-duration-ms <ms>', 'lock of a running chunk; a killed worker\'s chunk is resumed after about this plus the stalled interval', '30000')
    .option('--metrics-port <port>', 'serve /metrics and /healthz on this port (metrics.workerPort; 0 = any free port)')
    .option('--stalled-interval-ms <ms>', 'how often this worker looks for chunks of dead workers', '15000')
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const config = loadConfig({
          file: o['config'],
          env: process.env,
          overrides: {
            'model.dir': o['model'],
            'server.tasksDir': o['tasksDir'],
            'generation.modelDir': o['generationModel'],
            'redis.url': o['redisUrl'],
            'batches.workerConcurrency': o['concurrency'] === undefined ? undefined : parseIntOption('--concurrency', o['concurrency'], 1),
            'metrics.workerPort': o['metricsPort'] === undefined ? undefined : parseIntOption('--metrics-port', o['metricsPort'], 0),
          },
        });
        await runWorker(config, createLogger(config.log.level), {
          lockDurationMs: parseIntOption('--lock-duration-ms', o['lockDurationMs'], 1000),
          stalledIntervalMs: parseIntOption('--stalled-interval-ms', o['stalledIntervalMs'], 500),
        });
      }),
    );
}

/**
 * One engine per process (startRuntime), plus the decoder when
 * generation.modelDir is set (same keys as serve: its chat/completions batch
 * lines run there as offline sequences), one BullMQ worker feeding them. Runs
 * until SIGTERM/SIGINT; then it takes no new chunk, lets running ones finish
 * (their results are in Redis), drains the scheduler and releases the GPU.
 * A chunk cut short by a crash is resumed by another worker.
 */
export async function runWorker(config: PetServeConfig, logger: Logger, opts: WorkerRunOptions = {}): Promise<void> {
  const registry = new Registry();
  const metrics = createMetrics(registry, { perTaskTopK: config.metrics.perTaskTopK });
  const runtime = await startRuntime(config, logger, { observer: metrics.observer });
  metrics.bindRuntime(runtime);
  // Workers have no API: /metrics and /healthz on their own port when configured (compose sets it).
  const endpoint = config.metrics.workerPort !== null ? await serveMetrics(registry, { host: config.server.host, port: config.metrics.workerPort }) : null;
  const sync = new WorkerTaskSync(runtime.registry, [config.server.tasksDir, config.server.uploadDir], logger);
  const gateway = InferenceGateway.forRuntime(runtime, config.server.maxInputsPerRequest);
  // Registered only with a decoder, as in serve: the same generation metrics for offline sequences.
  const genMetrics = config.generation.modelDir !== null ? new GenerationMetrics(registry) : null;
  const generation = await startServedGeneration(runtime, config, {
    logger,
    isEncoderModel: (id) => runtime.registry.answersTo(id),
    ...(genMetrics ? { observer: genMetrics.observer, onStep: genMetrics.onStep } : {}),
  }).catch(async (err: unknown) => {
    await runtime.close();
    throw err;
  });
  if (generation && genMetrics) genMetrics.bind(generation.runtime);
  // Several replicas: tasks registered through any api replica (encoder tasks and decoder adapters) come from the shared catalog.
  const catalog = await openSharedCatalog(config, runtime.registry, runtime.checkpoint.dir, logger, decoderCatalogTarget(generation)).catch(
    async (err: unknown) => {
      await generation?.close();
      await runtime.close();
      throw err;
    },
  );
  const syncTask = async (id: string): Promise<void> => {
    await catalog?.sync.ensure(id);
    await sync.sync(id);
  };
  const settings = batchQueueSettings(config);
  const worker = BatchWorker.start({
    settings,
    engine: { gateway, syncTask, completions: generation?.completions ?? null },
    concurrency: config.batches.workerConcurrency,
    logger,
    lockDurationMs: opts.lockDurationMs,
    stalledIntervalMs: opts.stalledIntervalMs,
  });
  const signal = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  // With Redis down this waits (connection errors are logged) until it answers or a signal comes.
  void worker.waitUntilReady().then(
    () =>
      logger.info(
        {
          redis: redactRedisUrl(settings.redisUrl),
          prefix: settings.prefix,
          concurrency: config.batches.workerConcurrency,
          tasks: runtime.registry.list().length,
          decoder: generation?.modelId ?? null,
        },
        'batch worker started; waiting for chunks',
      ),
    () => undefined,
  );
  // Items written since the last look, as the queue-items counter.
  let written = 0;
  const itemsTimer = setInterval(() => {
    const now = worker.stats().itemsWritten;
    metrics.recordQueueItems(now - written, 0);
    written = now;
  }, 2000);
  itemsTimer.unref();
  const received = await signal;
  clearInterval(itemsTimer);
  const force = (): void => {
    logger.warn('second signal: exiting now; running chunks will be resumed by another worker');
    process.exit(1);
  };
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  logger.info({ signal: received }, 'batch worker stopping: finishing running chunks');
  await worker.close(config.server.shutdownTimeoutMs);
  await runtime.scheduler.drain(config.server.shutdownTimeoutMs);
  await catalog?.close();
  // The decoder's buffers go before the shared device is destroyed.
  await generation?.close();
  await runtime.close();
  await endpoint?.close();
  logger.info({ ...worker.stats() }, 'batch worker stopped');
}
