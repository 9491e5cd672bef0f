// Request and response shapes of the OpenAI-compatible routes, as the official
// SDKs send and read them (https://platform.openai.com/docs/api-reference).
// Only the fields PetServe implements are accepted; unknown fields are refused
// by name, so a client never believes a setting took effect when it did not.

import { z } from 'zod';

const tokenArray = z.array(z.number().int()).min(1, 'a token array may not be empty');

export const embeddingsRequestSchema = z.strictObject({
  model: z.string().min(1),
  input: z.union([
    z.string(),
    z.array(z.string()).min(1, 'input may not be an empty array'),
    tokenArray,
    z.array(tokenArray).min(1, 'input may not be an empty array'),
  ]),
  encoding_format: z.enum(['float', 'base64']).default('float'),
  dimensions: z.number().int().positive().optional(),
  user: z.string().optional(),
});
export type EmbeddingsRequest = z.infer<typeof embeddingsRequestSchema>;

export interface EmbeddingObject {
  object: 'embedding';
  index: number;
  /** float: numbers; base64: little-endian float32 bytes, as the SDKs decode them. */
  embedding: number[] | string;
}

export interface EmbeddingsResponse {
  object: 'list';
  data: EmbeddingObject[];
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

/** A model as GET /v1/models lists it: the base model, or a task (with `parent` = its base). */
export interface ModelObject {
  id: string;
  object: 'model';
  /** Unix seconds. */
  created: number;
  owned_by: string;
  /** PetServe extensions: tasks name their base model and PET kind. */
  parent?: string;
  kind?: string;
}

export interface ModelList {
  object: 'list';
  data: ModelObject[];
}

/** OpenAI's error body; `type` follows the status, `code` is PetServe's stable error code. */
export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

/** OpenAI's error `type` for an HTTP status (the SDKs map the status; scripts read the type). */
export function openAiErrorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return status === 503 ? 'service_unavailable_error' : 'server_error';
  return 'invalid_request_error';
}

// ---------------------------------------------------------------- generation

/**
 * Sampling fields shared by chat and completions: OpenAI's, then PetServe's
 * extensions (vLLM's names). Types are checked here; ranges by the sampler
 * itself (validateSamplingParams), which names the field.
 */
const samplingFields = {
  model: z.string().min(1),
  max_tokens: z.number().int().positive().nullish(),
  temperature: z.number().nullish(),
  top_p: z.number().nullish(),
  n: z.number().int().positive().max(16).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish(),
  presence_penalty: z.number().nullish(),
  frequency_penalty: z.number().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullish(),
  user: z.string().optional(),
  top_k: z.number().int().nullish(),
  min_p: z.number().nullish(),
  repetition_penalty: z.number().nullish(),
  /** PetServe extensions: time-to-first-token and time-per-output-token objectives (ms) of this request. */
  ttft_slo_ms: z.number().positive().nullish(),
  tpot_slo_ms: z.number().positive().nullish(),
};

const textPart = z.strictObject({ type: z.literal('text'), text: z.string() });

export const chatMessageSchema = z.strictObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  /** A string or text parts (joined); null only as OpenAI allows it, on an assistant turn. */
  content: z.union([z.string(), z.array(textPart).min(1)]).nullable(),
  name: z.string().optional(),
});
export type ChatMessageInput = z.infer<typeof chatMessageSchema>;

export const chatCompletionRequestSchema = z.strictObject({
  ...samplingFields,
  messages: z.array(chatMessageSchema).min(1, 'messages may not be empty'),
  max_completion_tokens: z.number().int().positive().nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
});
export type ChatCompletionRequest = z.infer<typeof chatCompletionRequestSchema>;

export const completionRequestSchema = z.strictObject({
  ...samplingFields,
  prompt: z.union([
    z.string(),
    z.array(z.string()).min(1, 'prompt may not be an empty array'),
    tokenArray,
    z.array(tokenArray).min(1, 'prompt may not be an empty array'),
  ]),
  /** Legacy logprobs: how many alternatives per token (0-5), the chosen token always reported. */
  logprobs: z.number().int().min(0).max(5).nullish(),
  /** Accepted so the refusal can name them (PetServe does not implement them). */
  echo: z.boolean().nullish(),
  suffix: z.string().nullish(),
  best_of: z.number().int().nullish(),
});
export type CompletionRequest = z.infer<typeof completionRequestSchema>;

export type OpenAiFinishReason = 'stop' | 'length';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export interface ChatCompletionChoice {
  index: number;
  message: { role: 'assistant'; content: string; refusal: null };
  logprobs: { content: ChatTokenLogprob[] } | null;
  finish_reason: OpenAiFinishReason;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: ChatCompletionChoice[];
  usage: Usage;
  system_fingerprint: string;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  system_fingerprint: string;
  choices: {
    index: number;
    delta: { role?: 'assistant'; content?: string };
    logprobs: { content: ChatTokenLogprob[] } | null;
    finish_reason: OpenAiFinishReason | null;
  }[];
  usage?: Usage | null;
}

/** The legacy completions logprobs object. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[] | null;
  text_offset: number[];
}

export interface CompletionChoice {
  index: number;
  text: string;
  logprobs: CompletionLogprobs | null;
  finish_reason: OpenAiFinishReason | null;
}

export interface Completion {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  system_fingerprint: string;
  choices: CompletionChoice[];
  usage?: Usage | null;
}
