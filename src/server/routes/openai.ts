import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { TaskInfo, TaskRegistry } from '../../pet/registry.js';
import { RequestValidationError, toHttpFailure } from '../errors.js';
import type { CompletionsGateway } from '../../gateway/completions.js';
import type { InferenceGateway } from '../../gateway/gateway.js';
import { embed, embeddingsModel, embeddingsSequences } from '../../gateway/openai-embeddings.js';
import { jsonBody } from '../middleware/json-body.js';
import {
  embeddingsRequestSchema,
  openAiErrorType,
  type ModelList,
  type ModelObject,
  type OpenAiErrorBody,
} from '../protocol/openai.js';
import type { TaskRequestCounters } from '../task-counters.js';
import { parseOrThrow } from '../validate.js';

export interface OpenAiRouteDeps {
  gateway: InferenceGateway;
  registry: TaskRegistry;
  counters: TaskRequestCounters;
  /** Unix seconds the base model was loaded: its `created`. */
  baseCreated: number;
  maxBodyBytes: number;
  /** The data-plane key check (server.apiKeys), run inside the router so its 401 is OpenAI-shaped. */
  requireKey: RequestHandler;
  /** The decoder served beside the encoder (generation.modelDir), listed with its tasks. */
  decoder?: CompletionsGateway | null;
  /** Unix seconds the decoder was loaded. */
  decoderCreated?: number;
}

/** The OpenAPI paths of these routes (merged into /openapi.json; every one needs an API key when keys are set). */
export const openAiOpenApiPaths: Record<string, unknown> = {
  '/v1/embeddings': {
    post: {
      summary: 'OpenAI-compatible embeddings of the encoder (model = a task id, or the base model id: its pooled output)',
      security: [{ apiKey: [] }],
      requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['model', 'input'] } } } },
      responses: { '200': { description: 'embeddings' }, '400': { description: 'invalid field (OpenAI error shape)' }, '404': { description: 'unknown model' } },
    },
  },
  '/v1/models': {
    get: { summary: 'The base models (encoder, and the decoder when served) and every task with its parent (OpenAI model list)', security: [{ apiKey: [] }], responses: { '200': { description: 'model list' } } },
  },
  '/v1/models/{model}': {
    get: {
      summary: 'One model or task',
      security: [{ apiKey: [] }],
      parameters: [{ name: 'model', in: 'path', required: true, schema: { type: 'string' } }],
      responses: { '200': { description: 'model' }, '404': { description: 'unknown model' } },
    },
  },
};

/**
 * The OpenAI-compatible surface over the encoder: POST /v1/embeddings and the
 * model list. The `model` field picks the task (or the base model), as in vLLM and LoRAX; errors
 * come back in OpenAI's shape so the SDKs raise their usual APIError subclasses.
 */
export function openAiRouter(deps: OpenAiRouteDeps): Router {
  const router = Router();
  const paths = ['/v1/embeddings', '/v1/models', '/v1/models/:model'];
  router.use(paths, deps.requireKey);

  const baseModelId = deps.gateway.baseModelId;
  const modelOfTask = (t: TaskInfo): ModelObject => ({
    id: t.id,
    object: 'model',
    created: Math.floor(Date.parse(t.registeredAt) / 1000),
    owned_by: 'petserve',
    parent: baseModelId,
    kind: t.kind,
  });
  const baseModel = (): ModelObject => ({ id: baseModelId, object: 'model', created: deps.baseCreated, owned_by: 'petserve', kind: 'base' });

  const decoder = deps.decoder ?? null;
  const decoderCreated = deps.decoderCreated ?? deps.baseCreated;
  const decoderBase = (d: CompletionsGateway): ModelObject => ({ id: d.baseModelId, object: 'model', created: decoderCreated, owned_by: 'petserve', kind: 'base' });
  const decoderTask = (d: CompletionsGateway, t: { id: string; kind: string }): ModelObject => ({
    id: t.id,
    object: 'model',
    created: decoderCreated,
    owned_by: 'petserve',
    parent: d.baseModelId,
    kind: t.kind,
  });
  const decoderModels = (): ModelObject[] => (decoder ? [decoderBase(decoder), ...decoder.tasks().map((t) => decoderTask(decoder, t))] : []);

  router.get('/v1/models', (_req: Request, res: Response) => {
    const list: ModelList = { object: 'list', data: [baseModel(), ...deps.registry.list().map(modelOfTask), ...decoderModels()] };
    res.json(list);
  });

  router.get('/v1/models/:model', async (req: Request, res: Response) => {
    const id = String(req.params['model']);
    if (id === baseModelId) {
      res.json(baseModel());
      return;
    }
    const decoderEntry = decoderModels().find((m) => m.id === id);
    if (decoderEntry) {
      res.json(decoderEntry);
      return;
    }
    res.json(modelOfTask(await deps.gateway.taskFor(id)));
  });

  router.post('/v1/embeddings', ...jsonBody(deps.maxBodyBytes), async (req: Request, res: Response) => {
    const body = parseOrThrow(embeddingsRequestSchema, req.body);
    const model = await embeddingsModel(deps.gateway, body, { isDecoderModel: (id) => decoder?.serves(id) === true });
    let inputs = 0;
    let ok = false;
    try {
      const sequences = embeddingsSequences(deps.gateway, body);
      inputs = sequences.length;
      res.json(await embed(deps.gateway, model, body, sequences));
      ok = true;
    } finally {
      deps.counters.record(model.id, inputs, ok);
    }
  });

  router.use(paths, openAiErrorHandler);
  return router;
}

/** The field an error names: RequestValidationError's, or a gateway error's own `param` (model, messages, prompt). */
function paramOf(err: unknown): string | null {
  if (err instanceof RequestValidationError) return err.param;
  const param = (err as { param?: unknown } | null)?.param;
  return typeof param === 'string' ? param : null;
}

/** Errors of the OpenAI routes in OpenAI's shape; statuses as the SDKs expect (422 → 400). */
export function openAiErrorHandler(err: unknown, _req: Request, res: Response, next: NextFunction): void {
  if (res.headersSent) return next(err);
  const failure = toHttpFailure(err);
  if (failure.unexpected) return next(err); // the app's handler logs it and answers 500
  const status = failure.status === 422 ? 400 : failure.status;
  const body: OpenAiErrorBody = { error: { message: failure.message, type: openAiErrorType(status), param: paramOf(err), code: failure.code } };
  res.set(failure.headers).status(status).json(body);
}
