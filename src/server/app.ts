// The express application: middleware order, routes, the 404 and the error
// handler. Everything the routes need comes in through AppDeps; nothing here
// touches the GPU or reads the environment.

import express, { type Express, type NextFunction, type Request, type RequestHandler, type Response, type Router } from 'express';
import helmet from 'helmet';
import type { Registry } from 'prom-client';
import type { PetServeConfig } from '../config/config.js';
import type { TaskMemory } from '../engine/model-runner.js';
import type { BertCheckpoint } from '../model/checkpoint.js';
import type { TaskRegistry } from '../pet/registry.js';
import type { InferenceService } from '../scheduler/types.js';
import type { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import type { Logger } from '../util/logger.js';
import { RouteNotFoundError, toHttpFailure, UnauthorizedError } from './errors.js';
import type { CompletionsGateway } from '../gateway/completions.js';
import { InferenceGateway } from '../gateway/gateway.js';
import { ServerLifecycle } from './lifecycle.js';
import { ApiKeys, bearerToken } from './middleware/api-keys.js';
import { corsFor, refuseForeignOrigins } from './middleware/cors.js';
import { requestContext } from './middleware/request-context.js';
import { buildOpenApiDocument } from './openapi.js';
import type { ErrorBody } from './protocol/v1.js';
import { openAiOpenApiPaths, openAiRouter } from './routes/openai.js';
import { generationOpenApiPaths, openAiGenerationRouter } from './routes/openai-generation.js';
import { predictRouter } from './routes/predict.js';
import { taskRouter } from './routes/tasks.js';
import { v2Router } from './routes/v2.js';
import { TaskAdmin, type DecoderTasks, type SharedCatalog } from './task-admin.js';
import { TaskRequestCounters } from './task-counters.js';

/** The runtime pieces the HTTP layer uses (a `Runtime` fits; tests may swap the scheduler). */
export interface AppRuntime {
  checkpoint: BertCheckpoint;
  registry: TaskRegistry;
  runner: { taskMemory(): TaskMemory[] };
  scheduler: InferenceService;
  tokenizer: TextTokenizer | null;
}

export interface AppDeps {
  runtime: AppRuntime;
  config: PetServeConfig;
  logger: Logger;
  /** Served at GET /metrics (filled by src/metrics). */
  metricsRegistry: Registry;
  /** Run before every route, after the request id is set (e.g. HTTP metrics). */
  middleware?: RequestHandler[];
  /** Mounted after the built-in routes, before the 404 handler (batch routes, status page). */
  routers?: Router[];
  /** OpenAPI paths of those routers, merged into /openapi.json. */
  openApiPaths?: Record<string, unknown>;
  /** Readiness; the serve command flips it when shutdown begins. */
  lifecycle?: ServerLifecycle;
  /** The shared task catalog when replicas share one (config catalog.blobDir). */
  catalog?: (SharedCatalog & { ensure(id: string): Promise<void> }) | null;
  /** Readiness of optional parts for /v2/health/ready (e.g. { batches: {...} }). */
  readinessParts?: () => Record<string, unknown>;
  /** The decoder served beside the encoder (generation.modelDir): /v1/chat/completions, /v1/completions. */
  completions?: CompletionsGateway | null;
  /** That decoder's adapters, registered and removed through /v1/tasks with `model` = its id. */
  decoderTasks?: DecoderTasks | null;
}

/**
 * Routes anyone may call, even with server.apiKeys set; every other route in
 * /openapi.json is guarded by an API key (data plane) or the admin token
 * (task management). test/server/auth.test.ts holds the document to this list.
 */
export const PUBLIC_ROUTES: readonly string[] = [
  'GET /',
  'GET /status/assets/{file}',
  'GET /openapi.json',
  'GET /v2',
  'GET /v2/health/live',
  'GET /v2/health/ready',
  // Public unless server.publicMetrics is false.
  'GET /metrics',
];

/** Path prefixes of the data plane, guarded by server.apiKeys (the admin routes have their own token). */
const KEYED_PATHS = ['/v1/tasks/:task/predict', '/v2/models', '/v1/batches'];

/** Whether this request may see per-task rows in GET /v1/status (set by the app for the status route). */
export const STATUS_DETAIL_LOCAL = 'statusDetail';

export function createApp(deps: AppDeps): Express {
  const { runtime, config, logger } = deps;
  const server = config.server;
  const lifecycle = deps.lifecycle ?? new ServerLifecycle();
  const counters = new TaskRequestCounters((id) => runtime.registry.has(id));
  runtime.registry.onRemoved((id) => counters.forget(id));
  const catalog = deps.catalog ?? null;
  const gateway = InferenceGateway.forRuntime(runtime, server.maxInputsPerRequest, catalog ? (id) => catalog.ensure(id) : undefined);
  const admin = new TaskAdmin(runtime.registry, {
    uploadDir: server.uploadDir,
    registerRoot: server.registerRoot,
    maxUploadBytes: server.maxUploadBytes,
    logger,
    catalog,
    decoder: deps.decoderTasks ?? null,
  });
  const openApi = buildOpenApiDocument();
  Object.assign(openApi['paths'] as Record<string, unknown>, openAiOpenApiPaths, generationOpenApiPaths);
  if (deps.openApiPaths) Object.assign(openApi['paths'] as Record<string, unknown>, deps.openApiPaths);

  const keys = new ApiKeys(server.apiKeys, server.adminToken);

  const app = express();
  app.disable('x-powered-by');
  app.use(requestContext(logger));
  app.use(helmet());
  app.use(corsFor(server.corsOrigins));
  app.use(refuseForeignOrigins(server.corsOrigins));
  for (const m of deps.middleware ?? []) app.use(m);
  app.use(KEYED_PATHS, keys.require());
  // Status: aggregate figures for anyone (without keys), per-task rows only for a key, the admin token, or server.publicStatus.
  app.use('/v1/status', (req: Request, res: Response, next: NextFunction) => {
    const token = bearerToken(req);
    const trusted = keys.isAdmin(token) || keys.ownerOf(token) !== null;
    if (keys.enabled && !trusted && !server.publicStatus) {
      throw new UnauthorizedError('GET /v1/status needs an API key or the admin token (or server.publicStatus: true)', 'petserve');
    }
    res.locals[STATUS_DETAIL_LOCAL] = trusted || server.publicStatus;
    next();
  });

  app.use(predictRouter({ gateway, counters, maxBodyBytes: server.maxBodyBytes }));
  app.use(
    openAiRouter({
      gateway,
      registry: runtime.registry,
      counters,
      baseCreated: Math.floor(Date.now() / 1000),
      maxBodyBytes: server.maxBodyBytes,
      requireKey: keys.require(),
      decoder: deps.completions ?? null,
    }),
  );
  app.use(
    openAiGenerationRouter({
      completions: deps.completions ?? null,
      isEncoderModel: (id) => runtime.registry.answersTo(id),
      maxBodyBytes: server.maxBodyBytes,
      requireKey: keys.require(),
      lifecycle,
      syncTask: catalog ? (id) => catalog.ensure(id) : undefined,
    }),
  );
  app.use(v2Router({ gateway, counters, lifecycle, maxBodyBytes: server.maxBodyBytes, readinessParts: deps.readinessParts }));
  app.use(
    taskRouter({
      admin,
      registry: runtime.registry,
      counters,
      taskMemory: () => runtime.runner.taskMemory(),
      decoder: deps.decoderTasks ?? null,
      adminToken: server.adminToken,
      maxBodyBytes: server.maxBodyBytes,
      maxUploadBytes: server.maxUploadBytes,
    }),
  );
  if (!server.publicMetrics) app.use('/metrics', keys.require());
  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', deps.metricsRegistry.contentType).send(await deps.metricsRegistry.metrics());
  });
  app.get('/openapi.json', (_req, res) => {
    res.json(openApi);
  });
  for (const router of deps.routers ?? []) app.use(router);

  app.use((req: Request) => {
    throw new RouteNotFoundError(req.method, req.path);
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const log = req.log ?? logger;
    if (res.headersSent) {
      // Answered already (503 at the shutdown bound) or a stream that failed midway: end it, never write twice.
      if (!res.writableEnded) res.destroy();
      log.debug({ err: String(err) }, 'error after the response was sent');
      return;
    }
    const failure = toHttpFailure(err);
    if (failure.unexpected) log.error({ err }, 'unexpected error');
    else if (failure.code === 'CLIENT_ABORTED') log.info('client closed the connection before its request was complete');
    const body: ErrorBody = { error: { code: failure.code, message: failure.message } };
    res.set(failure.headers).status(failure.status).json(body);
  });
  return app;
}
