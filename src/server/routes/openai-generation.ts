// POST /v1/chat/completions and /v1/completions over the decoder: OpenAI's
// request and response shapes, Server-Sent Events for `stream: true`, and a
// client that goes away cancels its sequences (their KV blocks are freed at
// the next step). What depends on the model is the gateway's (CompletionsGateway).

import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { SampledToken } from '../../engine/generation/sampling.js';
import type { CompletionsGateway } from '../../gateway/completions.js';
import { ModelKindError, UnknownModelError } from '../../gateway/errors.js';
import {
  chatCompletionJob,
  checkCompletionFields,
  choiceSeed,
  completionJob,
  finishReasonOf,
  usageOf,
  type ChoiceResult,
  type OpenAiGenerationJob,
} from '../../gateway/openai-generation.js';
import { PetServeError } from '../../util/errors.js';
import { toHttpFailure } from '../errors.js';
import type { ServerLifecycle } from '../lifecycle.js';
import { jsonBody } from '../middleware/json-body.js';
import { chatCompletionRequestSchema, completionRequestSchema, openAiErrorType, type OpenAiErrorBody } from '../protocol/openai.js';
import { parseOrThrow } from '../validate.js';
import { openAiErrorHandler } from './openai.js';

export interface GenerationRouteDeps {
  /** Null when no decoder is served (generation.modelDir unset): requests are refused by model. */
  completions: CompletionsGateway | null;
  /** Encoder ids (base and tasks) on this server, for "that is an encoder model" instead of 404. */
  isEncoderModel(id: string): boolean;
  maxBodyBytes: number;
  requireKey: RequestHandler;
  lifecycle?: ServerLifecycle;
  /** Bring a task up to date with the shared catalog before it is looked up (several replicas). */
  syncTask?: ((id: string) => Promise<void>) | undefined;
}

const generationPost = (summary: string, bodyRequired: string[]): Record<string, unknown> => ({
  post: {
    summary,
    security: [{ apiKey: [] }],
    requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: bodyRequired } } } },
    responses: {
      '200': {
        description: 'the completion (application/json), or with stream: true Server-Sent Events of chunks ending with `data: [DONE]`',
        content: { 'application/json': { schema: { type: 'object' } }, 'text/event-stream': { schema: { type: 'string' } } },
      },
      '400': { description: 'invalid field, over-long prompt or chat template failure (OpenAI error shape, `param` names the field)' },
      '401': { description: 'missing or wrong API key' },
      '404': { description: 'unknown model' },
      '413': { description: 'body larger than server.maxBodyBytes' },
      '429': { description: 'too many waiting sequences; retry after Retry-After seconds', headers: { 'Retry-After': { schema: { type: 'integer' } } } },
      '503': { description: 'shutting down' },
    },
  },
});

/** The OpenAPI paths of these routes (merged into /openapi.json; they need an API key when keys are set). */
export const generationOpenApiPaths: Record<string, unknown> = {
  '/v1/chat/completions': generationPost('OpenAI-compatible chat completion with the decoder (model = its base id or a task id)', ['model', 'messages']),
  '/v1/completions': generationPost('OpenAI-compatible text completion with the decoder (model = its base id or a task id)', ['model', 'prompt']),
};

/**
 * Run every choice; answer JSON (`respond`) or stream chunks. The SSE headers
 * go out with the first chunk, so a refusal before any token (overload,
 * shutting down) is still an ordinary error response with its status.
 */
async function runChoices(
  completions: CompletionsGateway,
  plan: OpenAiGenerationJob,
  req: Request,
  res: Response,
): Promise<void> {
  const abort = new AbortController();
  // 'close' before the response finished: the client went away. Cancel its sequences now.
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const send = (chunk: object): void => {
    if (res.destroyed) return;
    if (!res.headersSent) {
      res.status(200).set({ 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
      res.flushHeaders();
    }
    res.write(`data: ${JSON.stringify(chunk)}\n\n`);
  };
  const runs = plan.choices.map(async (spec): Promise<ChoiceResult> => {
    const pending: SampledToken[] = [];
    let first = true;
    const seed = choiceSeed(plan, spec);
    const out = await completions.generate({
      task: plan.task,
      promptIds: spec.promptIds,
      maxTokens: spec.maxTokens,
      sampling: { ...plan.sampling, seed },
      stop: plan.stop ?? null,
      signal: abort.signal,
      ...plan.slo,
      ...(plan.stream && plan.wantLogprobs ? { onToken: (t: SampledToken) => void pending.push(t) } : {}),
      ...(plan.stream
        ? {
            onText: (text: string) => {
              for (const c of plan.shape.delta(spec.index, text, pending.splice(0), first)) send(c);
              first = false;
            },
          }
        : {}),
    });
    if (plan.stream) for (const c of plan.shape.finish(spec.index, finishReasonOf(out), pending.splice(0), first)) send(c);
    return { spec, out };
  });
  let results: ChoiceResult[];
  try {
    results = await Promise.all(runs);
  } catch (err) {
    abort.abort(); // the other choices of this request are of no use now
    await Promise.allSettled(runs);
    if (!res.headersSent) throw err;
    const failed = toHttpFailure(err);
    if (!res.destroyed) {
      // Mid-stream: an error event (the SDKs raise it as APIError), then the end.
      const body: OpenAiErrorBody = { error: { message: failed.message, type: openAiErrorType(failed.status), param: null, code: failed.code } };
      res.write(`data: ${JSON.stringify(body)}\n\n`);
      res.end();
    }
    if (failed.unexpected) req.log?.error({ err }, 'generation failed mid-stream');
    return;
  }
  const usage = usageOf(results, plan.n);
  if (!plan.stream) {
    res.json(plan.respond(results, usage));
    return;
  }
  if (plan.includeUsage) send(plan.shape.usage(usage));
  if (!res.destroyed) res.end('data: [DONE]\n\n');
}

export function openAiGenerationRouter(deps: GenerationRouteDeps): Router {
  const router = Router();
  const paths = ['/v1/chat/completions', '/v1/completions'];
  router.use(paths, deps.requireKey);

  /** The served decoder and the task `model` names (null: its base), synced with the shared catalog first. */
  const resolve = async (model: string): Promise<{ completions: CompletionsGateway; task: string | null }> => {
    if (deps.lifecycle && !deps.lifecycle.ready) throw new PetServeError('SHUTTING_DOWN', 'the server is shutting down');
    if (deps.completions && model !== deps.completions.baseModelId) await deps.syncTask?.(model);
    if (!deps.completions) {
      if (deps.isEncoderModel(model)) {
        throw new ModelKindError(`model '${model}' is an encoder model: this server runs no decoder (start it with --generation-model DIR)`);
      }
      throw new UnknownModelError(model);
    }
    return { completions: deps.completions, task: deps.completions.taskFor(model) };
  };

  router.post('/v1/chat/completions', ...jsonBody(deps.maxBodyBytes), async (req: Request, res: Response) => {
    const body = parseOrThrow(chatCompletionRequestSchema, req.body);
    const { completions, task } = await resolve(body.model);
    await runChoices(completions, chatCompletionJob(completions, task, body), req, res);
  });

  router.post('/v1/completions', ...jsonBody(deps.maxBodyBytes), async (req: Request, res: Response) => {
    const body = parseOrThrow(completionRequestSchema, req.body);
    checkCompletionFields(body);
    const { completions, task } = await resolve(body.model);
    await runChoices(completions, completionJob(completions, task, body), req, res);
  });

  router.use(paths, openAiErrorHandler);
  return router;
}
