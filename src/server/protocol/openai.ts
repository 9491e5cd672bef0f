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
