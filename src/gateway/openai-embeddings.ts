// OpenAI embeddings over the encoder: which model (the base or a task) a
// `model` names, its inputs as sequences, and OpenAI's response shape. Shared
// by POST /v1/embeddings and the batch queue's /v1/embeddings lines.

import { InvalidParamError } from './errors.js';
import type { InferenceGateway, Sequence, ServedModel } from './gateway.js';
import type { EmbeddingsRequest, EmbeddingsResponse } from './openai-protocol.js';

export interface EmbeddingModels {
  /** Ids of the decoder (base or task) served beside the encoder. */
  isDecoderModel(id: string): boolean;
}

/**
 * The encoder model `body.model` names — a task or the base model, whose
 * embedding is its pooled output — with the model-dependent checks (kind, dimensions).
 */
export async function embeddingsModel(gateway: InferenceGateway, body: EmbeddingsRequest, models: EmbeddingModels): Promise<ServedModel> {
  if (models.isDecoderModel(body.model)) {
    throw new InvalidParamError(`model '${body.model}' is a decoder model: it answers /v1/chat/completions and /v1/completions, not embeddings`, 'model');
  }
  const model = await gateway.modelFor(body.model);
  const hidden = gateway.modelConfig.hiddenSize;
  if (body.dimensions !== undefined && body.dimensions !== hidden) {
    throw new InvalidParamError(`dimensions: this model's embeddings have ${hidden} dimensions; other sizes are not supported`, 'dimensions');
  }
  return model;
}

/** `input` (a string, strings, token ids or arrays of them) as sequences, tokenized and checked as predict does. */
export function embeddingsSequences(gateway: InferenceGateway, body: EmbeddingsRequest): Sequence[] {
  const input = body.input;
  if (typeof input === 'string') return gateway.encodeTexts('input', [input], false);
  if (input.every((x) => typeof x === 'string')) return gateway.encodeTexts('input', input as string[], false);
  if (input.every((x) => typeof x === 'number')) return gateway.checkIds('input', [input as number[]], undefined, false);
  return gateway.checkIds('input', input as number[][], undefined, false);
}

/** Run the sequences and answer OpenAI's embeddings list. */
export async function embed(
  gateway: InferenceGateway,
  model: ServedModel,
  body: EmbeddingsRequest,
  sequences: readonly Sequence[],
  priority: 'online' | 'offline' = 'online',
): Promise<EmbeddingsResponse> {
  const results = await gateway.run(model, sequences, { deadlineMs: undefined, pooled: true, priority });
  const promptTokens = sequences.reduce((s, q) => s + q.inputIds.length, 0);
  return {
    object: 'list',
    model: model.id,
    data: results.map((r, index) => {
      if (!r.pooled) throw new Error(`model '${model.id}' answered without a pooled output`);
      return { object: 'embedding', index, embedding: body.encoding_format === 'base64' ? toBase64(r.pooled) : Array.from(r.pooled) };
    }),
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  };
}

/** Little-endian float32 bytes, base64: what the OpenAI SDKs decode for encoding_format=base64. */
function toBase64(v: Float32Array): string {
  const bytes = new Uint8Array(v.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < v.length; i++) view.setFloat32(i * 4, v[i]!, true);
  return Buffer.from(bytes).toString('base64');
}
