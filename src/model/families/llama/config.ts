import { z } from 'zod';
import { CheckpointError } from '../../../util/errors.js';
import { eosIds, parseOrThrow, requireDivisible } from '../decoder/config-common.js';
import { parseRopeScaling, rotaryInvFreq } from '../decoder/positions.js';
import type { DecoderConfig } from '../decoder/types.js';

/** Llama, Mistral and Qwen2 config.json keys (transformers' LlamaConfig / MistralConfig / Qwen2Config). */
export interface LlamaConfig extends DecoderConfig {
  /** q/k/v (and o for Llama's attention_bias) carry biases. */
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
}

const positiveInt = z.number().int().positive();
const schema = z.object({
  model_type: z.string(),
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  vocab_size: positiveInt,
  max_position_embeddings: positiveInt.default(2048),
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(10000),
  rope_scaling: z.unknown().optional(),
  hidden_act: z.string().default('silu'),
  tie_word_embeddings: z.boolean().optional(),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
  sliding_window: z.number().int().positive().nullish(),
  use_sliding_window: z.boolean().optional(),
  bos_token_id: z.number().int().nonnegative().nullish(),
  eos_token_id: z.unknown().optional(),
});

export function parseLlamaConfig(raw: unknown, source: string): LlamaConfig {
  const c = parseOrThrow(schema, raw, source, 'Llama-family');
  if (c.hidden_act !== 'silu') {
    throw new CheckpointError(`${source}: hidden_act '${c.hidden_act}' is not supported for ${c.model_type} (only 'silu')`);
  }
  const heads = c.num_attention_heads;
  const kvHeads = c.num_key_value_heads ?? heads;
  requireDivisible(source, 'grouped-query attention', heads, 'num_attention_heads', kvHeads, 'num_key_value_heads');
  if (c.head_dim == null) requireDivisible(source, 'head size', c.hidden_size, 'hidden_size', heads, 'num_attention_heads');
  const headDim = c.head_dim ?? c.hidden_size / heads;
  if (headDim % 2 !== 0) throw new CheckpointError(`${source}: head_dim ${headDim} must be even for rotary embeddings`);
  const qwen2 = c.model_type === 'qwen2';
  // A sliding window shorter than the context would change attention; serve only what fits in it.
  const window = qwen2 ? (c.use_sliding_window ? c.sliding_window : null) : c.sliding_window;
  const maxPositions = window != null ? Math.min(window, c.max_position_embeddings) : c.max_position_embeddings;
  return {
    modelType: c.model_type,
    hiddenSize: c.hidden_size,
    numHiddenLayers: c.num_hidden_layers,
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    headDim,
    intermediateSize: c.intermediate_size,
    vocabSize: c.vocab_size,
    maxPositionEmbeddings: maxPositions,
    typeVocabSize: 1,
    id2label: null,
    norm: 'rms',
    normEps: c.rms_norm_eps,
    mlp: 'swiglu',
    positions: { kind: 'rotary', rotaryDims: headDim, invFreq: rotaryInvFreq(headDim, c.rope_theta, parseRopeScaling(c.rope_scaling, source)) },
    embeddingLayerNorm: false,
    // LlamaConfig and MistralConfig default to untied heads, Qwen2Config too.
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: eosIds(c.eos_token_id),
    qkvBias: qwen2 || c.attention_bias,
    oBias: !qwen2 && c.attention_bias,
    mlpBias: c.mlp_bias,
  };
}
