import express, { Router, type NextFunction, type Request, type Response } from 'express';
import multer from 'multer';
import { z } from 'zod';
import type { BatchService } from '../../queue/producer.js';
import { checkIdempotencyKey, itemSchema, parseJsonItems } from '../../queue/items.js';
import { parseBatchJsonl, type BatchModels } from '../../queue/openai-batch.js';
import type { ParsedItem } from '../../queue/types.js';
import { multipart } from '../middleware/multipart.js';
import { API_KEY } from '../openapi.js';
import { normalizeError, PayloadTooLargeError, RequestValidationError, UnsupportedMediaTypeError } from '../errors.js';

export interface BatchRouteDeps {
  batches: BatchService;
  /**
   * Largest batch body — JSON, JSONL or an uploaded JSONL file. A batch is an
   * upload, not a predict call, so it gets server.maxUploadBytes rather than
   * server.maxBodyBytes.
   */
  maxUploadBytes: number;
  /**
   * The models OpenAI-format lines may name (decoder base and tasks for chat
   * and completions, the encoder base and its tasks for embeddings). Without it every such
   * line is refused.
   */
  models?: BatchModels;
}

const NO_MODELS: BatchModels = { isDecoderModel: () => false, isEncoderModel: () => false };

// Not text/plain: a browser may send that cross-origin without a CORS preflight.
const JSONL_TYPES = ['application/x-ndjson', 'application/jsonl', 'application/x-jsonlines', 'application/jsonlines'];
const IDEMPOTENCY_HEADER = 'Idempotency-Key';
const MAX_LIST_LIMIT = 100;

function intQuery(req: Request, name: string, fallback: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const raw = req.query[name];
  if (raw === undefined) return fallback;
  const n = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new RequestValidationError(`query ${name} must be an integer in ${min}..${max}`);
  return n;
}

/**
 * Offline batches (issue 6):
 *   POST   /v1/batches                 {"items": [...], "idempotency_key"?} | JSONL body | multipart file → 202
 *                                      (JSONL: PetServe items, or OpenAI Batch lines {"custom_id", "method", "url", "body"})
 *   GET    /v1/batches                 ?offset&limit, newest first
 *   GET    /v1/batches/:id             status, counts, timestamps
 *   GET    /v1/batches/:id/results     JSONL in item order; ?offset&limit pages over item indices
 *   DELETE /v1/batches/:id             cancel what has not run
 * Mount with createApp({ routers: [createBatchRouter(...)] }).
 */
export function createBatchRouter(deps: BatchRouteDeps): Router {
  const { batches, maxUploadBytes } = deps;
  const models = deps.models ?? NO_MODELS;
  const router = Router();
  const json = express.json({ limit: maxUploadBytes, type: ['application/json', 'application/*+json'] });
  const jsonl = express.text({ limit: maxUploadBytes, type: JSONL_TYPES });
  const upload = multipart(multer({ storage: multer.memoryStorage(), limits: { fileSize: maxUploadBytes, files: 1 } }).single('file'));

  router.post('/v1/batches', json, jsonl, upload, async (req: Request, res: Response) => {
    let items: ParsedItem[];
    let key = checkIdempotencyKey(req.get(IDEMPOTENCY_HEADER));
    if (req.file) {
      items = await parseBatchJsonl(req.file.buffer.toString('utf8'), models);
      key ??= checkIdempotencyKey((req.body as Record<string, unknown> | undefined)?.['idempotency_key']);
    } else if (typeof req.body === 'string') {
      items = await parseBatchJsonl(req.body, models);
    } else if (typeof req.body === 'object' && req.body !== null && !Array.isArray(req.body)) {
      const body = req.body as Record<string, unknown>;
      const unknown = Object.keys(body).filter((k) => k !== 'items' && k !== 'idempotency_key');
      if (unknown.length > 0) throw new RequestValidationError(`${unknown.length} unknown field(s); a batch body has "items" and "idempotency_key"`);
      if (body['items'] === undefined) throw new RequestValidationError('send {"items": [...]}, a JSONL body, or a multipart upload with field "file"');
      items = await parseJsonItems(body['items']);
      key ??= checkIdempotencyKey(body['idempotency_key']);
    } else {
      throw new UnsupportedMediaTypeError(
        `send application/json {"items": [...]}, JSONL (${JSONL_TYPES[0]}), or multipart/form-data with a file field "file" (got ${req.get('Content-Type') ?? 'no body'})`,
      );
    }
    const { batch, created } = await batches.submit(items, key, req.keyOwner);
    if (!created) res.setHeader('Idempotent-Replayed', 'true');
    res.status(202).location(`/v1/batches/${batch.id}`).json(batch);
  });

  router.get('/v1/batches', async (req: Request, res: Response) => {
    const offset = intQuery(req, 'offset', 0, 0)!;
    const limit = intQuery(req, 'limit', 20, 1, MAX_LIST_LIMIT)!;
    const { total, batches: data } = await batches.list(offset, limit, req.keyOwner);
    res.json({ object: 'list', data, offset, limit, total });
  });

  router.get('/v1/batches/:id', async (req: Request, res: Response) => {
    res.json(await batches.get(String(req.params['id']), req.keyOwner));
  });

  router.get('/v1/batches/:id/results', async (req: Request, res: Response) => {
    const offset = intQuery(req, 'offset', 0, 0)!;
    const limit = intQuery(req, 'limit', undefined, 1);
    const { batch, end, pages } = await batches.results(String(req.params['id']), offset, limit, req.keyOwner);
    res.status(200).type('application/x-ndjson; charset=utf-8');
    res.setHeader('X-Batch-Status', batch.status);
    res.setHeader('X-Batch-Total', String(batch.counts.total));
    // Where the next page starts (absent on the last page); lines of items still pending are left out.
    if (end < batch.counts.total) res.setHeader('X-Next-Offset', String(end));
    res.flushHeaders();
    try {
      for await (const lines of pages) {
        if (res.destroyed) return; // client went away
        if (lines.length === 0) continue;
        if (!res.write(`${lines.join('\n')}\n`)) await new Promise((resolve) => res.once('drain', resolve));
      }
      res.end();
    } catch (err) {
      // Headers are gone: a partial body must not look complete.
      req.log?.warn({ err: String(err) }, 'batch results stream failed');
      res.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  });

  router.delete('/v1/batches/:id', async (req: Request, res: Response) => {
    res.json(await batches.cancel(String(req.params['id']), req.keyOwner));
  });

  // Statuses come from the app's one error map (src/server/errors.ts); only say what was too large in batch terms.
  router.use((err: unknown, _req: Request, _res: Response, next: NextFunction) => {
    const e = normalizeError(err);
    if (e instanceof PayloadTooLargeError) {
      return next(new PayloadTooLargeError(`batch body is larger than server.maxUploadBytes (${maxUploadBytes} bytes); split it into several batches`));
    }
    next(e);
  });
  return router;
}

/** The batch routes for /openapi.json: createApp({ openApiPaths: batchOpenApiPaths() }). */
export function batchOpenApiPaths(): Record<string, unknown> {
  const error = { description: 'error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  const errors = (...codes: number[]): Record<string, unknown> => Object.fromEntries(codes.map((c) => [String(c), error]));
  const item = z.toJSONSchema(itemSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  delete item['$schema'];
  const batch = {
    type: 'object',
    description: 'status (queued | running | completed | failed | cancelled), counts (total, done, failed, cancelled, pending), timestamps',
  };
  const id = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
  const page = [
    { name: 'offset', in: 'query', schema: { type: 'integer', minimum: 0 } },
    { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1 } },
  ];
  const jsonBatch = { 'application/json': { schema: batch } };
  return {
    '/v1/batches': {
      post: {
        summary: 'queue an offline batch',
        security: API_KEY,
        parameters: [{ name: 'Idempotency-Key', in: 'header', schema: { type: 'string', maxLength: 256 } }],
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: item }, idempotency_key: { type: 'string' } } },
            },
            'application/x-ndjson': {
              schema: { type: 'string', description: 'one item per line, or OpenAI Batch input lines {"custom_id", "method": "POST", "url", "body"} (one bad line refuses the batch)' },
            },
            'multipart/form-data': {
              schema: { type: 'object', required: ['file'], properties: { file: { type: 'string', format: 'binary' }, idempotency_key: { type: 'string' } } },
            },
          },
        },
        responses: { '202': { description: 'queued (or the earlier batch of this idempotency key)', content: jsonBatch }, ...errors(400, 401, 403, 409, 413, 415, 422, 503) },
      },
      get: { summary: 'list batches (the caller key\'s), newest first', security: API_KEY, parameters: page, responses: { '200': { description: 'batches' }, ...errors(400, 401, 503) } },
    },
    '/v1/batches/{id}': {
      get: { summary: 'a batch', security: API_KEY, parameters: [id], responses: { '200': { description: 'the batch', content: jsonBatch }, ...errors(401, 404, 503) } },
      delete: {
        summary: 'cancel what has not run',
        security: API_KEY,
        parameters: [id],
        responses: { '200': { description: 'the batch', content: jsonBatch }, ...errors(401, 403, 404, 409, 503) },
      },
    },
    '/v1/batches/{id}/results': {
      get: {
        summary:
          'results as JSONL in item order: {index, custom_id, task, response | error}, or for OpenAI-format batches {id, custom_id, response: {status_code, request_id, body} | null, error}',
        security: API_KEY,
        parameters: [id, ...page],
        responses: { '200': { description: 'JSONL', content: { 'application/x-ndjson': { schema: { type: 'string' } } } }, ...errors(400, 401, 404, 503) },
      },
    },
  };
}
