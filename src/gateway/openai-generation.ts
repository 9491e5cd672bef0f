// OpenAI chat/completions requests turned into generation jobs, and finished
// choices turned into OpenAI's response and chunk shapes. Shared by the HTTP
// routes (src/server/routes/openai-generation.ts: JSON or SSE) and the batch
// queue's workers (src/queue: one JSON body per batch line), so an offline
// line answers exactly what the route answers for the same body.

import { randomUUID } from 'node:crypto';
import { SamplingParamError, validateSamplingParams, type SampledToken, type SamplingParams } from '../engine/generation/sampling.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';
import type { CompletionsGateway } from './completions.js';
import { InvalidParamError } from './errors.js';
import type { GenerateOutput } from './generation.js';
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatMessageInput,
  ChatTokenLogprob,
  Completion,
  CompletionLogprobs,
  CompletionRequest,
  OpenAiFinishReason,
  Usage,
} from './openai-protocol.js';

export const SYSTEM_FINGERPRINT = 'petserve';

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
    throw new InvalidParamError(`${param} must be ${err.requirement}`, param);
  }
}

/** Checks of a chat body beyond its schema that need no model: logprobs fields and sampling ranges. */
export function checkChatRequest(body: ChatCompletionRequest): SamplingParams {
  const wantLogprobs = body.logprobs === true;
  if (!wantLogprobs && (body.top_logprobs ?? 0) > 0) throw new InvalidParamError('top_logprobs needs logprobs: true', 'top_logprobs');
  return samplingOf(body, wantLogprobs ? (body.top_logprobs ?? 0) : 0, 'top_logprobs');
}

/** Fields a completions body may carry for the SDKs' sake but PetServe does not implement. */
export function checkCompletionFields(body: CompletionRequest): void {
  if (body.echo === true) throw new InvalidParamError('echo is not supported: send the prompt text yourself', 'echo');
  if (body.suffix !== undefined && body.suffix !== null && body.suffix !== '') throw new InvalidParamError('suffix is not supported (no fill-in-the-middle)', 'suffix');
  const n = body.n ?? 1;
  if (body.best_of !== undefined && body.best_of !== null && body.best_of !== n) throw new InvalidParamError('best_of is not supported (other than best_of = n)', 'best_of');
}

/** Checks of a completions body beyond its schema that need no model. */
export function checkCompletionRequest(body: CompletionRequest): SamplingParams {
  checkCompletionFields(body);
  return samplingOf(body, body.logprobs ?? 0, 'logprobs');
}

/** Text parts are joined; tool calls and images are not taken (the schema refuses them). */
function chatMessage(m: ChatMessageInput): ChatMessage {
  const content = m.content === null ? '' : typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('');
  return { role: m.role, content, ...(m.name !== undefined ? { name: m.name } : {}) };
}

export interface ChoiceSpec {
  index: number;
  promptIds: number[];
  maxTokens: number;
}

export interface ChoiceResult {
  spec: ChoiceSpec;
  out: GenerateOutput;
}

/** How one route spells its stream chunks. */
export interface StreamShape {
  /** A content delta (with the logprobs of the tokens it covers); `first`: the choice's first chunk. */
  delta(index: number, text: string, tokens: SampledToken[], first: boolean): object[];
  finish(index: number, reason: OpenAiFinishReason, tokens: SampledToken[], first: boolean): object[];
  usage(usage: Usage): object;
}

/** One chat or completions request, ready to run: its choices, sampling and how to spell the answer. */
export interface OpenAiGenerationJob {
  task: string | null;
  choices: ChoiceSpec[];
  n: number;
  sampling: SamplingParams;
  stop: string | string[] | null | undefined;
  stream: boolean;
  includeUsage: boolean;
  wantLogprobs: boolean;
  /** The request's objectives (PetServe extensions ttft_slo_ms / tpot_slo_ms); absent: the task's. */
  slo: GenerationSlo;
  shape: StreamShape;
  respond(results: ChoiceResult[], usage: Usage): ChatCompletion | Completion;
}

/** The objectives a request names; a missing one is taken from the task's config by the gateway. */
export interface GenerationSlo {
  ttftSloMs?: number;
  tpotSloMs?: number;
}

function sloOf(body: { ttft_slo_ms?: number | null | undefined; tpot_slo_ms?: number | null | undefined }): GenerationSlo {
  return {
    ...(body.ttft_slo_ms != null ? { ttftSloMs: body.ttft_slo_ms } : {}),
    ...(body.tpot_slo_ms != null ? { tpotSloMs: body.tpot_slo_ms } : {}),
  };
}

export const finishReasonOf = (out: GenerateOutput): OpenAiFinishReason => (out.finishReason === 'length' ? 'length' : 'stop');

/** Prompt tokens counted once per prompt (n choices share one), completion tokens per choice. */
export function usageOf(results: ChoiceResult[], n: number): Usage {
  let prompt = 0;
  let completion = 0;
  for (const r of results) {
    if (r.spec.index % n === 0) prompt += r.out.usage.prompt_tokens;
    completion += r.out.usage.completion_tokens;
  }
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** Choice k of a prompt samples from seed + k, so n choices differ and each is reproducible on its own. */
export function choiceSeed(job: OpenAiGenerationJob, spec: ChoiceSpec): number | null {
  return job.sampling.seed === null ? null : job.sampling.seed + (spec.index % job.n);
}

const tokenBytes = (text: string): number[] => [...Buffer.from(text, 'utf8')];

/** A chat request as a job for `task` (null: the decoder base); the prompt is rendered and tokenized here. */
export function chatCompletionJob(completions: CompletionsGateway, task: string | null, body: ChatCompletionRequest): OpenAiGenerationJob {
  const sampling = checkChatRequest(body);
  const wantLogprobs = body.logprobs === true;
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
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices,
  });
  const lp = (tokens: SampledToken[]): { content: ChatTokenLogprob[] } | null => (wantLogprobs ? { content: logprobsOf(tokens) } : null);
  const roleChunk = (index: number): ChatCompletionChunk => chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
  return {
    task,
    choices: Array.from({ length: n }, (_, index) => ({ index, promptIds, maxTokens })),
    n,
    sampling,
    stop: body.stop,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    wantLogprobs,
    slo: sloOf(body),
    shape: {
      delta: (index, text, tokens, first) => [
        ...(first ? [roleChunk(index)] : []),
        chunk([{ index, delta: { content: text }, logprobs: lp(tokens), finish_reason: null }]),
      ],
      finish: (index, reason, tokens, first) => [
        ...(first ? [roleChunk(index)] : []),
        chunk([{ index, delta: {}, logprobs: tokens.length > 0 ? lp(tokens) : null, finish_reason: reason }]),
      ],
      usage: (usage) => ({ ...chunk([]), usage }),
    },
    respond: (results, usage): ChatCompletion => ({
      id,
      object: 'chat.completion',
      created,
      model,
      system_fingerprint: SYSTEM_FINGERPRINT,
      choices: results.map(({ spec, out }) => ({
        index: spec.index,
        message: { role: 'assistant', content: out.text, refusal: null },
        logprobs: lp(out.tokens),
        finish_reason: finishReasonOf(out),
      })),
      usage,
    }),
  };
}

/** A completions request as a job for `task`; every prompt of it gets n choices. */
export function completionJob(completions: CompletionsGateway, task: string | null, body: CompletionRequest): OpenAiGenerationJob {
  const sampling = checkCompletionRequest(body);
  const n = body.n ?? 1;
  const wantLogprobs = body.logprobs !== undefined && body.logprobs !== null;
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
  const chunk = (list: Completion['choices']): Completion => ({ id, object: 'text_completion', created, model, system_fingerprint: SYSTEM_FINGERPRINT, choices: list });
  return {
    task,
    choices,
    n,
    sampling,
    stop: body.stop,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    wantLogprobs,
    slo: sloOf(body),
    shape: {
      delta: (index, text, tokens) => [chunk([{ index, text, logprobs: logprobsOf(index, tokens), finish_reason: null }])],
      finish: (index, reason, tokens) => [chunk([{ index, text: '', logprobs: tokens.length > 0 ? logprobsOf(index, tokens) : null, finish_reason: reason }])],
      usage: (usage) => ({ ...chunk([]), usage }),
    },
    respond: (results, usage): Completion => ({
      ...chunk(results.map(({ spec, out }) => ({ index: spec.index, text: out.text, logprobs: logprobsOf(spec.index, out.tokens), finish_reason: finishReasonOf(out) }))),
      usage,
    }),
  };
}

/**
 * Run every choice of a job to the end and answer its JSON body (no
 * streaming): the batch queue's path. One failed choice cancels the others —
 * a line is answered whole or not at all.
 */
export async function runGenerationJob(
  completions: CompletionsGateway,
  job: OpenAiGenerationJob,
  opts: { priority?: 'online' | 'offline'; signal?: AbortSignal } = {},
): Promise<ChatCompletion | Completion> {
  const abort = new AbortController();
  opts.signal?.addEventListener('abort', () => abort.abort(), { once: true });
  const runs = job.choices.map(
    async (spec): Promise<ChoiceResult> => ({
      spec,
      out: await completions.generate({
        task: job.task,
        promptIds: spec.promptIds,
        maxTokens: spec.maxTokens,
        sampling: { ...job.sampling, seed: choiceSeed(job, spec) },
        stop: job.stop ?? null,
        signal: abort.signal,
        ...job.slo,
        ...(opts.priority ? { priority: opts.priority } : {}),
      }),
    }),
  );
  try {
    const results = await Promise.all(runs);
    return job.respond(results, usageOf(results, job.n));
  } catch (err) {
    abort.abort();
    await Promise.allSettled(runs);
    throw err;
  }
}
