import { z } from 'zod';
import { CheckpointError } from '../../../util/errors.js';
import type { BertArchitecture } from '../../presets.js';
import type { ModelConfig } from '../types.js';

/** A parsed Hugging Face BERT config.json (the keys we execute), plus labels. model_type / architectures were matched by families/index.ts. */
export interface BertConfig extends BertArchitecture, ModelConfig {
  /** Label names by class index when the checkpoint is a sequence classifier. */
  id2label: string[] | null;
}

const positiveInt = z.number().int().positive();
// Defaults are transformers' BertConfig defaults, for keys a checkpoint may omit.
const configSchema = z.object({
  model_type: z.string().optional(),
  hidden_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  intermediate_size: positiveInt,
  vocab_size: positiveInt,
  hidden_act: z.string().default('gelu'),
  layer_norm_eps: z.number().positive().default(1e-12),
  max_position_embeddings: positiveInt.default(512),
  type_vocab_size: positiveInt.default(2),
  initializer_range: z.number().default(0.02),
  pad_token_id: z.number().int().nonnegative().default(0),
  position_embedding_type: z.string().default('absolute'),
  id2label: z.record(z.string(), z.string()).optional(),
});

export function parseBertConfig(raw: unknown, source: string): BertConfig {
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new CheckpointError(`${source}: invalid BERT config: ${issues}`);
  }
  const c = parsed.data;
  // HF's "gelu" is the exact erf form; the tanh approximations differ by ~1e-3.
  if (c.hidden_act !== 'gelu') {
    throw new CheckpointError(`${source}: hidden_act '${c.hidden_act}' is not supported (only 'gelu', the erf form)`);
  }
  if (c.position_embedding_type !== 'absolute') {
    throw new CheckpointError(
      `${source}: position_embedding_type '${c.position_embedding_type}' is not supported (only 'absolute')`,
    );
  }
  if (c.hidden_size % c.num_attention_heads !== 0) {
    throw new CheckpointError(
      `${source}: hidden_size ${c.hidden_size} is not divisible by num_attention_heads ${c.num_attention_heads}`,
    );
  }
  let id2label: string[] | null = null;
  if (c.id2label) {
    const entries = Object.entries(c.id2label).map(([k, v]) => [Number(k), v] as const);
    id2label = [];
    for (const [index, label] of entries) {
      if (!Number.isInteger(index) || index < 0 || index >= entries.length) {
        throw new CheckpointError(`${source}: id2label key '${index}' is not an index 0..${entries.length - 1}`);
      }
      id2label[index] = label;
    }
  }
  return {
    hiddenSize: c.hidden_size,
    numHiddenLayers: c.num_hidden_layers,
    numAttentionHeads: c.num_attention_heads,
    intermediateSize: c.intermediate_size,
    vocabSize: c.vocab_size,
    maxPositionEmbeddings: c.max_position_embeddings,
    typeVocabSize: c.type_vocab_size,
    hiddenAct: 'gelu',
    layerNormEps: c.layer_norm_eps,
    initializerRange: c.initializer_range,
    padTokenId: c.pad_token_id,
    positionEmbeddingType: 'absolute',
    id2label,
  };
}
