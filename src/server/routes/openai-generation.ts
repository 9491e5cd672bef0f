// POST /v1/chat/completions and /v1/completions over the decoder: OpenAI's
// request and response shapes, Server-Sent Events for `stream: true`, and a
// client that goes away cancels its sequences (their KV blocks are freed at
// the next step). What depends on the model is the gateway's (CompletionsGateway).

import { randomUUID } from 'node:crypto';
import { Router, type Request, type RequestHandler, type Response } from 'express';
import { SamplingParamError, validateSamplingParams, type SampledToken, type SamplingParams } from '../../engine/generation/sampling.js';
import type { CompletionsGateway } from '../../gateway/completions.js';
import { ModelKindError, UnknownModelError } from '../../gateway/errors.js';
import type { GenerateOutput } from '../../gateway/generation.js';
import type { ChatMessage } from '../../tokenizer/chat-template.js';
import { PetServeError } from '../../util/errors.js';
import { RequestValidationError, toHttpFailure } from '../errors.js';
import type { ServerLifecycle } from '../lifecycle.js';
import { jsonBody } from '../middleware/json-body.js';
import {
  chatCompletionRequestSchema,
  completionRequestSchema,
  openAiErrorType,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatMessageInput,
  type ChatTokenLogprob,
  type Completion,
  type CompletionLogprobs,
  type OpenAiErrorBody,
  type OpenAiFinishReason,
  type Usage,
} from '../protocol/openai.js';
import { parseOrThrow } from '../validate.js';
import { openAiErrorHandler } from './openai.js';

export interface GenerationRouteDeps {
  /** Null when no decoder is served (generation.modelDir unset): requests are refused by model. */
  completions: CompletionsGateway | null;
  /** Encoder ids on this server, for "that is an encoder task" instead of 404. */
  isEncoderModel(id: string): boolean;
  maxBodyBytes: number;
  requireKey: RequestHandler;
  lifecycle?: ServerLifecycle;
}

const FINGERPRINT = 'petserve';

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

/** PetServe's sampling fields under their OpenAI names; `logprobs` differs by route. */
const OPENAI_FIELD: Record<Exclude<keyof SamplingParams, 'logprobs'>, string> = {
  temperature: 'temperature',
  topK: 'top_k',
  topP: 'top_p',
  minP: 'min_p',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  repetitionPenalty: 'repetition_penalty',
  seed: 'seed',
};

interface SamplingFields {
  temperature?: number | null | undefined;
  top_p?: number | null | undefined;
  top_k?: number | null | undefined;
  min_p?: number | null | undefined;
  presence_penalty?: number | null | undefined;
  frequency_penalty?: number | null | undefined;
  repetition_penalty?: number | null | undefined;
  seed?: number | null | undefined;
}

/** The request's sampling, checked by the sampler; its refusal names the OpenAI field and leaves the value out. */
function samplingOf(body: SamplingFields, topLogprobs: number, logprobsField: string): SamplingParams {
  const given: Partial<SamplingParams> = { logprobs: topLogprobs };
  const set = <K extends keyof SamplingParams>(key: K, v: SamplingParams[K] | null | undefined): void => {
    if (v !== null && v !== undefined) given[key] = v;
  };
  set('temperature', body.temperature);
  set('topP', body.top_p);
  set('topK', body.top_k);
  set('minP', body.min_p);
  set('presencePenalty', body.presence_penalty);
  set('frequencyPenalty', body.frequency_penalty);
  set('repetitionPenalty', body.repetition_penalty);
  set('seed', body.seed);
  try {
    return validateSamplingParams(given);
  } catch (err) {
    if (!(err instanceof SamplingParamError)) throw err;
    const param = err.field === 'logprobs' ? logprobsField : OPENAI_FIELD[err.field];
    throw new RequestValidationError(`${param} must be ${err.requirement}`, param);
  }
}

/** Text parts are joined; tool calls and images are not taken (the schema refuses them). */
function chatMessage(m: ChatMessageInput): ChatMessage {
  const content = m.content === null ? '' : typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('');
  return { role: m.role, content, ...(m.name !== undefined ? { name: m.name } : {}) };
}

interface ChoiceSpec {
  index: number;
  promptIds: number[];
  maxTokens: number;
}

interface ChoiceResult {
  spec: ChoiceSpec;
  out: GenerateOutput;
}

/** How one route spells its stream chunks. */
interface StreamShape {
  /** A content delta (with the logprobs of the tokens it covers); `first`: the choice's first chunk. */
  delta(index: number, text: string, tokens: SampledToken[], first: boolean): object[];
  finish(index: number, reason: OpenAiFinishReason, tokens: SampledToken[], first: boolean): object[];
  usage(usage: Usage): object;
}

interface RunPlan {
  task: string | null;
  choices: ChoiceSpec[];
  n: number;
  sampling: SamplingParams;
  stop: string | string[] | null | undefined;
  stream: boolean;
  includeUsage: boolean;
  wantLogprobs: boolean;
}

const finishReason = (out: GenerateOutput): OpenAiFinishReason => (out.finishReason === 'length' ? 'length' : 'stop');

/** Prompt tokens counted once per prompt (n choices share one), completion tokens per choice. */
function usageOf(results: ChoiceResult[], n: number): Usage {
  let prompt = 0;
  let completion = 0;
  for (const r of results) {
    if (r.spec.index % n === 0) prompt += r.out.usage.prompt_tokens;
    completion += r.out.usage.completion_tokens;
  }
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/**
 * Run every choice; answer JSON (`respond`) or stream chunks. The SSE headers
 * go out with the first chunk, so a refusal before any token (overload,
 * shutting down) is still an ordinary error response with its status.
 */
async function runChoices(
  completions: CompletionsGateway,
  plan: RunPlan,
  req: Request,
  res: Response,
  shape: StreamShape,
  respond: (results: ChoiceResult[], usage: Usage) => object,
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
    const seed = plan.sampling.seed === null ? null : plan.sampling.seed + (spec.index % plan.n);
    const out = await completions.generate({
      task: plan.task,
      promptIds: spec.promptIds,
      maxTokens: spec.maxTokens,
      sampling: { ...plan.sampling, seed },
      stop: plan.stop ?? null,
      signal: abort.signal,
      ...(plan.stream && plan.wantLogprobs ? { onToken: (t: SampledToken) => void pending.push(t) } : {}),
      ...(plan.stream
        ? {
            onText: (text: string) => {
              for (const c of shape.delta(spec.index, text, pending.splice(0), first)) send(c);
              first = false;
            },
          }
        : {}),
    });
    if (plan.stream) for (const c of shape.finish(spec.index, finishReason(out), pending.splice(0), first)) send(c);
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
    res.json(respond(results, usage));
    return;
  }
  if (plan.includeUsage) send(shape.usage(usage));
  if (!res.destroyed) res.end('data: [DONE]\n\n');
}

const tokenBytes = (text: string): number[] => [...Buffer.from(text, 'utf8')];

export function openAiGenerationRouter(deps: GenerationRouteDeps): Router {
  const router = Router();
  const paths = ['/v1/chat/completions', '/v1/completions'];
  router.use(paths, deps.requireKey);

  /** The served decoder and the task `model` names (null: its base). */
  const resolve = (model: string): { completions: CompletionsGateway; task: string | null } => {
    if (deps.lifecycle && !deps.lifecycle.ready) throw new PetServeError('SHUTTING_DOWN', 'the server is shutting down');
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
    const { completions, task } = resolve(body.model);
    const wantLogprobs = body.logprobs === true;
    if (!wantLogprobs && (body.top_logprobs ?? 0) > 0) throw new RequestValidationError('top_logprobs needs logprobs: true', 'top_logprobs');
    const sampling = samplingOf(body, wantLogprobs ? (body.top_logprobs ?? 0) : 0, 'top_logprobs');
    const promptIds = completions.chatPromptIds(body.messages.map(chatMessage));
    const maxTokens = completions.maxTokensFor('messages', promptIds.length, body.max_completion_tokens ?? body.max_tokens ?? undefined);
    const n = body.n ?? 1;
    const id = `chatcmpl-${randomUUID().replaceAll('-', '')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = body.model;
    const logprobsOf = (tokens: SampledToken[]): ChatTokenLogprob[] =>
      tokens.map((t) => {
        const token = completions.tokenText(t.token);
        return {
          token,
          logprob: t.logprob,
          bytes: tokenBytes(token),
          top_logprobs: t.top.map((a) => {
            const alt = completions.tokenText(a.token);
            return { token: alt, logprob: a.logprob, bytes: tokenBytes(alt) };
          }),
        };
      });
    const chunk = (choices: ChatCompletionChunk['choices']): ChatCompletionChunk => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      system_fingerprint: FINGERPRINT,
      choices,
    });
    const lp = (tokens: SampledToken[]): { content: ChatTokenLogprob[] } | null => (wantLogprobs ? { content: logprobsOf(tokens) } : null);
    const roleChunk = (index: number): ChatCompletionChunk => chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    const shape: StreamShape = {
      delta: (index, text, tokens, first) => [
        ...(first ? [roleChunk(index)] : []),
        chunk([{ index, delta: { content: text }, logprobs: lp(tokens), finish_reason: null }]),
      ],
      finish: (index, reason, tokens, first) => [
        ...(first ? [roleChunk(index)] : []),
        chunk([{ index, delta: {}, logprobs: tokens.length > 0 ? lp(tokens) : null, finish_reason: reason }]),
      ],
      usage: (usage) => ({ ...chunk([]), usage }),
    };
    await runChoices(
      completions,
      {
        task,
        choices: Array.from({ length: n }, (_, index) => ({ index, promptIds, maxTokens })),
        n,
        sampling,
        stop: body.stop,
        stream: body.stream === true,
        includeUsage: body.stream_options?.include_usage === true,
        wantLogprobs,
      },
      req,
      res,
      shape,
      (results, usage): ChatCompletion => ({
        id,
        object: 'chat.completion',
        created,
        model,
        system_fingerprint: FINGERPRINT,
        choices: results.map(({ spec, out }) => ({
          index: spec.index,
          message: { role: 'assistant', content: out.text, refusal: null },
          logprobs: lp(out.tokens),
          finish_reason: finishReason(out),
        })),
        usage,
      }),
    );
  });

  router.post('/v1/completions', ...jsonBody(deps.maxBodyBytes), async (req: Request, res: Response) => {
    const body = parseOrThrow(completionRequestSchema, req.body);
    if (body.echo === true) throw new RequestValidationError('echo is not supported: send the prompt text yourself', 'echo');
    if (body.suffix !== undefined && body.suffix !== null && body.suffix !== '') throw new RequestValidationError('suffix is not supported (no fill-in-the-middle)', 'suffix');
    const n = body.n ?? 1;
    if (body.best_of !== undefined && body.best_of !== null && body.best_of !== n) throw new RequestValidationError('best_of is not supported (other than best_of = n)', 'best_of');
    const { completions, task } = resolve(body.model);
    const wantLogprobs = body.logprobs !== undefined && body.logprobs !== null;
    const sampling = samplingOf(body, body.logprobs ?? 0, 'logprobs');
    const p = body.prompt;
    const prompts: number[][] =
      typeof p === 'string'
        ? [completions.textPromptIds(p)]
        : p.every((x) => typeof x === 'string')
          ? (p as string[]).map((t) => completions.textPromptIds(t))
          : p.every((x) => typeof x === 'number')
            ? [completions.checkPromptIds('prompt', p as number[])]
            : (p as number[][]).map((ids) => completions.checkPromptIds('prompt', ids));
    const choices: ChoiceSpec[] = [];
    for (const [i, promptIds] of prompts.entries()) {
      const maxTokens = completions.maxTokensFor('prompt', promptIds.length, body.max_tokens ?? undefined);
      for (let k = 0; k < n; k++) choices.push({ index: i * n + k, promptIds, maxTokens });
    }
    const id = `cmpl-${randomUUID().replaceAll('-', '')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = body.model;
    const offsets = new Map<number, number>();
    const logprobsOf = (index: number, tokens: SampledToken[]): CompletionLogprobs | null => {
      if (!wantLogprobs) return null;
      let offset = offsets.get(index) ?? 0;
      const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
      for (const t of tokens) {
        const text = completions.tokenText(t.token);
        out.tokens.push(text);
        out.token_logprobs.push(t.logprob);
        out.top_logprobs!.push(Object.fromEntries(t.top.map((a) => [completions.tokenText(a.token), a.logprob])));
        out.text_offset.push(offset);
        offset += text.length;
      }
      offsets.set(index, offset);
      return out;
    };
    const chunk = (choices: Completion['choices']): Completion => ({ id, object: 'text_completion', created, model, system_fingerprint: FINGERPRINT, choices });
    const shape: StreamShape = {
      delta: (index, text, tokens) => [chunk([{ index, text, logprobs: logprobsOf(index, tokens), finish_reason: null }])],
      finish: (index, reason, tokens) => [chunk([{ index, text: '', logprobs: tokens.length > 0 ? logprobsOf(index, tokens) : null, finish_reason: reason }])],
      usage: (usage) => ({ ...chunk([]), usage }),
    };
    await runChoices(
      completions,
      {
        task,
        choices,
        n,
        sampling,
        stop: body.stop,
        stream: body.stream === true,
        includeUsage: body.stream_options?.include_usage === true,
        wantLogprobs,
      },
      req,
      res,
      shape,
      (results, usage): Completion => ({
        ...chunk(
          results.map(({ spec, out }) => ({ index: spec.index, text: out.text, logprobs: logprobsOf(spec.index, out.tokens), finish_reason: finishReason(out) })),
        ),
        usage,
      }),
    );
  });

  router.use(paths, openAiErrorHandler);
  return router;
}
