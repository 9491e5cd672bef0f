import { z } from 'zod';
import { CheckpointError } from '../../../util/errors.js';
import { eosIds, parseOrThrow, requireDivisible } from '../decoder/config-common.js';
import type { DecoderConfig } from '../decoder/types.js';

const positiveInt = z.number().int().positive();
// Defaults are transformers' GPT2Config defaults.
const schema = z.object({
  model_type: z.string(),
  n_embd: positiveInt.default(768),
  n_layer: positiveInt.default(12),
  n_head: positiveInt.default(12),
  n_inner: positiveInt.nullish(),
  n_positions: positiveInt.default(1024),
  vocab_size: positiveInt.default(50257),
  layer_norm_epsilon: z.number().positive().default(1e-5),
  activation_function: z.string().default('gelu_new'),
  scale_attn_weights: z.boolean().default(true),
  scale_attn_by_inverse_layer_idx: z.boolean().default(false),
  tie_word_embeddings: z.boolean().default(true),
  bos_token_id: z.number().int().nonnegative().nullish(),
  eos_token_id: z.unknown().optional(),
});

export function parseGpt2Config(raw: unknown, source: string): DecoderConfig {
  const c = parseOrThrow(schema, raw, source, 'GPT-2');
  // gelu_new and gelu_pytorch_tanh are the same tanh approximation.
  if (c.activation_function !== 'gelu_new' && c.activation_function !== 'gelu_pytorch_tanh') {
    throw new CheckpointError(`${source}: activation_function '${c.activation_function}' is not supported (gelu_new, gelu_pytorch_tanh)`);
  }
  if (!c.scale_attn_weights || c.scale_attn_by_inverse_layer_idx) {
    throw new CheckpointError(`${source}: only scale_attn_weights true with scale_attn_by_inverse_layer_idx false is supported`);
  }
  requireDivisible(source, 'head size', c.n_embd, 'n_embd', c.n_head, 'n_head');
  return {
    modelType: c.model_type,
    hiddenSize: c.n_embd,
    numHiddenLayers: c.n_layer,
    numAttentionHeads: c.n_head,
    numKeyValueHeads: c.n_head,
    headDim: c.n_embd / c.n_head,
    intermediateSize: c.n_inner ?? 4 * c.n_embd,
    vocabSize: c.vocab_size,
    maxPositionEmbeddings: c.n_positions,
    typeVocabSize: 1,
    id2label: null,
    norm: 'layer',
    normEps: c.layer_norm_epsilon,
    mlp: 'gelu_tanh',
    positions: { kind: 'learned' },
    embeddingLayerNorm: false,
    tieWordEmbeddings: c.tie_word_embeddings,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: eosIds(c.eos_token_id),
  };
}
