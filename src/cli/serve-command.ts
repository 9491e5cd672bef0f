import type { Command } from 'commander';
import { Registry } from 'prom-client';
import { loadConfig, type PetServeConfig } from '../config/config.js';
import { startRuntime, type Runtime } from '../runtime/runtime.js';
import { startServedGeneration, type ServedGeneration } from '../runtime/served-generation.js';
import { GenerationMetrics } from '../metrics/generation.js';
import { httpMetricsMiddleware } from '../metrics/http.js';
import { createMetrics } from '../metrics/metrics.js';
import { BatchService } from '../queue/producer.js';
import { batchQueueSettings } from '../queue/settings.js';
import { createApp } from '../server/app.js';
import { batchOpenApiPaths, createBatchRouter } from '../server/routes/batches.js';
import { createStatusRouter, statusOpenApiPaths } from '../server/routes/status.js';
import { listen, ServerLifecycle, SHUTDOWN_ANSWER_GRACE_MS, type HttpServerHandle } from '../server/lifecycle.js';
import { removeStaleUploads } from '../server/task-admin.js';
import { createLogger, type Logger } from '../util/logger.js';
import { parseIntOption } from './options.js';
import { decoderCatalogTarget, openSharedCatalog } from './shared-catalog.js';

export function registerServe(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('serve')
    .description(
      'serve the REST API (/v1), the Open Inference Protocol (/v2) and /metrics. ' +
        'Without a model (model.dir) it generates a demo model and tasks once (server.demoDir) and serves them',
    )
    .option('--config <file>', 'YAML configuration file (configs/default.yaml documents every key)')
    .option('--host <host>', 'listen address (server.host)')
    .option('--port <port>', 'listen port, 0 = any free port (server.port)')
    .option('--model <dir>', 'Hugging Face BERT checkpoint directory (model.dir)')
    .option('--tasks-dir <dir>', 'register each subdirectory as a task named after it (server.tasksDir)')
    .option('--generation-model <dir>', 'also serve this causal decoder on /v1/chat/completions and /v1/completions (generation.modelDir)')
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const config = loadConfig({
          file: o['config'],
          env: process.env,
          overrides: {
            'server.host': o['host'],
            'server.port': o['port'] === undefined ? undefined : parseIntOption('--port', o['port'], 0),
            'model.dir': o['model'],
            'server.tasksDir': o['tasksDir'],
            'generation.modelDir': o['generationModel'],
          },
        });
        await serve(config, createLogger(config.log.level));
      }),
    );
}

/** Run the server until SIGTERM/SIGINT, then shut down gracefully; resolves when everything is released. */
export async function serve(config: PetServeConfig, logger: Logger): Promise<void> {
  // One prom-client registry per process; the scheduler reports into it through the observer.
  const registry = new Registry();
  const metrics = createMetrics(registry, { perTaskTopK: config.metrics.perTaskTopK });
  await removeStaleUploads(config.server.uploadDir, logger);
  const runtime = await startRuntime(config, logger, { observer: metrics.observer });
  metrics.bindRuntime(runtime);
  // Never throws when Redis is down: batch routes answer 503 naming REDIS_URL, online inference goes on.
  const batches = BatchService.open(batchQueueSettings(config), logger);
  metrics.bindQueue(batches);
  const lifecycle = new ServerLifecycle();
  let http: HttpServerHandle;
  let catalog: Awaited<ReturnType<typeof openSharedCatalog>> = null;
  let generation: ServedGeneration | null = null;
  let genMetrics: GenerationMetrics | null = null;
  try {
    if (config.generation.modelDir !== null) {
      // Registered only with a decoder: an encoder-only server's /metrics stays as it was.
      genMetrics = new GenerationMetrics(registry);
      generation = await startServedGeneration(runtime, config, {
        logger,
        isEncoderModel: (id) => runtime.registry.answersTo(id),
        observer: genMetrics.observer,
        onStep: genMetrics.onStep,
      });
      if (generation) {
        genMetrics.bind(generation.runtime);
        // One namespace of ids for every model of the server: no encoder task may take the decoder's ids.
        const decoder = generation;
        runtime.registry.reserveIdsOf((id) => decoder.completions.serves(id));
      }
    }
    catalog = await openSharedCatalog(config, runtime.registry, runtime.checkpoint.dir, logger, decoderCatalogTarget(generation));
    const served = generation;
    const gm = genMetrics;
    const status = createStatusRouter({
      metrics,
      memory: runtime.runner,
      scheduler: runtime.scheduler,
      queue: batches,
      generation: served && gm ? { status: (seconds) => gm.status(served.completions.tasks(), seconds) } : null,
      kernels: {
        encoder: runtime.kernelTuning,
        ...(served?.runtime.kernelTuning ? { decoder: served.runtime.kernelTuning } : {}),
      },
      info: () => ({
        model: runtime.demo ? 'demo bert-mini' : (config.model.dir ?? ''),
        dtype: runtime.runner.dtype,
        adapter: runtime.ctx.capabilities.adapterName,
        policy: config.scheduler.policy,
      }),
    });
    const app = createApp({
      runtime,
      config,
      logger,
      metricsRegistry: registry,
      lifecycle,
      middleware: [httpMetricsMiddleware(metrics, { tasks: runtime.registry })],
      routers: [
        status,
        createBatchRouter({
          batches,
          maxUploadBytes: config.server.maxUploadBytes,
          models: { isDecoderModel: (id) => generation?.completions.serves(id) === true, isEncoderModel: (id) => runtime.registry.answersTo(id) },
        }),
      ],
      openApiPaths: { ...batchOpenApiPaths(), ...statusOpenApiPaths() },
      readinessParts: () => ({ batches: batches.health() }),
      catalog: catalog?.sync ?? null,
      completions: generation?.completions ?? null,
      decoderTasks: generation?.tasks ?? null,
    });
    http = await listen(app, {
      host: config.server.host,
      port: config.server.port,
      lifecycle,
      logger,
      timeouts: { requestTimeoutMs: config.server.requestTimeoutMs, headersTimeoutMs: config.server.headersTimeoutMs },
      keysRequired: config.server.apiKeys.length > 0,
    });
  } catch (err) {
    await catalog?.close();
    await batches.close();
    await generation?.close();
    await runtime.close();
    throw err;
  }
  logger.info({ url: http.url, port: http.port, tasks: runtime.registry.list().map((t) => t.id), demo: runtime.demo }, 'listening');

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  // A second signal means "now": skip the drain.
  const force = (): void => {
    logger.warn('second signal: exiting without waiting for in-flight requests');
    process.exit(1);
  };
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  const closeRedis = async (): Promise<void> => {
    await Promise.all([catalog?.close(), batches.close()]);
  };
  await shutdown(http, runtime, generation, closeRedis, config.server.shutdownTimeoutMs, logger, signal);
}

/**
 * How long after server.shutdownTimeoutMs the GPU release may take (the batch
 * on the device at the bound finishes first) before it is abandoned and the
 * process exits anyway. With SHUTDOWN_ANSWER_GRACE_MS this is the whole
 * overshoot: the process is gone within shutdownTimeoutMs + SHUTDOWN_EXIT_BOUND_MS.
 */
export const GPU_RELEASE_WAIT_MS = 2000;
export const SHUTDOWN_EXIT_BOUND_MS = SHUTDOWN_ANSWER_GRACE_MS + GPU_RELEASE_WAIT_MS + 500;

/**
 * Stop accepting connections, let in-flight requests finish and the scheduler
 * drain (both bounded by `timeoutMs`); at the bound, queued requests get 503
 * SHUTTING_DOWN. Then release the GPU after the running batch, or abandon it
 * after GPU_RELEASE_WAIT_MS; a last timer ends the process at
 * timeoutMs + SHUTDOWN_EXIT_BOUND_MS whatever still holds it.
 */
async function shutdown(
  http: HttpServerHandle,
  runtime: Runtime,
  generation: ServedGeneration | null,
  closeRedis: () => Promise<void>,
  timeoutMs: number,
  logger: Logger,
  signal: string,
): Promise<void> {
  const started = Date.now();
  logger.info({ signal, inFlight: http.inFlight(), timeoutMs }, 'shutting down: no new connections, finishing in-flight requests');
  setTimeout(() => {
    logger.error({ ms: Date.now() - started, boundMs: timeoutMs + SHUTDOWN_EXIT_BOUND_MS }, 'shutdown bound reached: exiting now');
    process.exit(process.exitCode ?? 0);
  }, timeoutMs + SHUTDOWN_EXIT_BOUND_MS).unref();
  // Generation stops admitting at once (new requests: 503) and lets running sequences finish inside the same bound.
  const [answered] = await Promise.all([http.close(timeoutMs), runtime.scheduler.drain(timeoutMs), generation?.stopAdmitting()]);
  let timer: NodeJS.Timeout | undefined;
  // Redis connections (batch queue, task catalog) close alongside, inside the same wait.
  const released = await Promise.race([
    // The decoder's buffers go before the shared device is destroyed.
    Promise.all([generation ? generation.close().then(() => runtime.close()) : runtime.close(), closeRedis()]).then(() => true),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), GPU_RELEASE_WAIT_MS))),
  ]);
  clearTimeout(timer);
  if (!released) logger.warn({ waitedMs: GPU_RELEASE_WAIT_MS }, 'GPU release abandoned: a batch is still running on the device (or Redis did not close)');
  logger.info({ ms: Date.now() - started, cutRequests: answered, gpuReleased: released }, 'shutdown complete');
  if (!released) process.exit(process.exitCode ?? 0);
}
