import { z } from 'zod';
import { CheckpointError } from '../../../util/errors.js';
import { eosIds, parseOrThrow, requireDivisible } from '../decoder/config-common.js';
import { alibiSlopes } from '../decoder/positions.js';
import type { DecoderConfig } from '../decoder/types.js';

const positiveInt = z.number().int().positive();
// Defaults are transformers' BloomConfig defaults (hidden_size may be spelled n_embed).
const schema = z.object({
  model_type: z.string(),
  hidden_size: positiveInt.optional(),
  n_embed: positiveInt.optional(),
  n_layer: positiveInt.default(2),
  n_head: positiveInt.default(8),
  vocab_size: positiveInt.default(250880),
  layer_norm_epsilon: z.number().positive().default(1e-5),
  apply_residual_connection_post_layernorm: z.boolean().default(false),
  tie_word_embeddings: z.boolean().default(true),
  seq_length: positiveInt.optional(),
  max_position_embeddings: positiveInt.optional(),
  bos_token_id: z.number().int().nonnegative().nullish(),
  eos_token_id: z.unknown().optional(),
});

/** ALiBi has no position table; the context served is seq_length (or 2048, BLOOM's training length). */
const DEFAULT_CONTEXT = 2048;

export function parseBloomConfig(raw: unknown, source: string): DecoderConfig {
  const c = parseOrThrow(schema, raw, source, 'BLOOM');
  const H = c.hidden_size ?? c.n_embed ?? 64;
  if (c.apply_residual_connection_post_layernorm) {
    throw new CheckpointError(`${source}: apply_residual_connection_post_layernorm true is not supported`);
  }
  requireDivisible(source, 'head size', H, 'hidden_size', c.n_head, 'n_head');
  return {
    modelType: c.model_type,
    hiddenSize: H,
    numHiddenLayers: c.n_layer,
    numAttentionHeads: c.n_head,
    numKeyValueHeads: c.n_head,
    headDim: H / c.n_head,
    intermediateSize: 4 * H,
    vocabSize: c.vocab_size,
    maxPositionEmbeddings: c.max_position_embeddings ?? c.seq_length ?? DEFAULT_CONTEXT,
    typeVocabSize: 1,
    id2label: null,
    norm: 'layer',
    normEps: c.layer_norm_epsilon,
    // bloom_gelu_forward is the same tanh approximation as gelu_new.
    mlp: 'gelu_tanh',
    positions: { kind: 'alibi', slopes: alibiSlopes(c.n_head) },
    embeddingLayerNorm: true,
    tieWordEmbeddings: c.tie_word_embeddings,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: eosIds(c.eos_token_id),
  };
}
