// The modules of a Hugging Face causal LM (LlamaForCausalLM, Qwen2ForCausalLM,
// MistralForCausalLM, GPT2LMHeadModel, BloomForCausalLM) as named_modules()
// names them on the instantiated model, read from its config.json alone.
// These are the names PEFT matches target_modules / modules_to_save against
// and writes into adapter tensor keys: `transformer.h.0.attn.c_attn` even
// where the hub's GPT-2 weights are stored without the `transformer.` prefix.

import { z } from 'zod';

import { CheckpointError } from '../util/errors.js';

export type DecoderModelType = 'llama' | 'qwen2' | 'mistral' | 'gpt2' | 'bloom';

export interface DecoderModule {
  /** named_modules() path (`model.layers.0.self_attn.q_proj`). */
  path: string;
  /** torch.nn.Linear (weight [out, in]), GPT-2's Conv1D (weight [in, out]) or torch.nn.Embedding ([num, dim]). */
  kind: 'linear' | 'conv1d' | 'embedding';
  /** Linear / Conv1D: in_features; Embedding: num_embeddings. */
  inFeatures: number;
  /** Linear / Conv1D: out_features; Embedding: embedding_dim. */
  outFeatures: number;
  bias: boolean;
}

export interface DecoderModuleTable {
  modelType: DecoderModelType;
  hiddenSize: number;
  modules: DecoderModule[];
  /** PEFT's default LoRA target_modules for this model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
  defaultLoraTargets: string[];
}

const positive = z.number().int().positive();

const llamaLikeSchema = z.object({
  model_type: z.enum(['llama', 'qwen2', 'mistral']),
  vocab_size: positive,
  hidden_size: positive,
  intermediate_size: positive,
  num_hidden_layers: positive,
  num_attention_heads: positive,
  num_key_value_heads: positive.nullish(),
  head_dim: positive.nullish(),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().optional(),
});

const gpt2Schema = z.object({
  model_type: z.literal('gpt2'),
  vocab_size: positive,
  n_embd: positive,
  n_layer: positive,
  n_positions: positive,
  n_inner: positive.nullish(),
});

const bloomSchema = z.object({
  model_type: z.literal('bloom'),
  vocab_size: positive,
  hidden_size: positive,
  n_layer: positive,
});

/** The modules of the causal LM that `config` (a parsed config.json) describes. */
export function decoderModuleTable(config: unknown, source: string): DecoderModuleTable {
  const modelType = typeof config === 'object' && config !== null ? (config as Record<string, unknown>)['model_type'] : undefined;
  const parse = <T>(schema: z.ZodType<T>): T => {
    const parsed = schema.safeParse(config);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new CheckpointError(`${source}: invalid ${String(modelType)} config: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
    }
    return parsed.data;
  };
  const modules: DecoderModule[] = [];
  const linear = (path: string, inFeatures: number, outFeatures: number, bias: boolean): void => {
    modules.push({ path, kind: 'linear', inFeatures, outFeatures, bias });
  };
  switch (modelType) {
    case 'llama':
    case 'qwen2':
    case 'mistral': {
      const c = parse(llamaLikeSchema);
      const h = c.hidden_size;
      const headDim = c.head_dim ?? h / c.num_attention_heads;
      const qWidth = c.num_attention_heads * headDim;
      const kvWidth = (c.num_key_value_heads ?? c.num_attention_heads) * headDim;
      const qkvBias = c.model_type === 'qwen2' || c.attention_bias === true;
      const mlpBias = c.mlp_bias === true;
      modules.push({ path: 'model.embed_tokens', kind: 'embedding', inFeatures: c.vocab_size, outFeatures: h, bias: false });
      for (let layer = 0; layer < c.num_hidden_layers; layer++) {
        const p = `model.layers.${layer}`;
        linear(`${p}.self_attn.q_proj`, h, qWidth, qkvBias);
        linear(`${p}.self_attn.k_proj`, h, kvWidth, qkvBias);
        linear(`${p}.self_attn.v_proj`, h, kvWidth, qkvBias);
        linear(`${p}.self_attn.o_proj`, qWidth, h, c.model_type === 'llama' && c.attention_bias === true);
        linear(`${p}.mlp.gate_proj`, h, c.intermediate_size, mlpBias);
        linear(`${p}.mlp.up_proj`, h, c.intermediate_size, mlpBias);
        linear(`${p}.mlp.down_proj`, c.intermediate_size, h, mlpBias);
      }
      linear('lm_head', h, c.vocab_size, false);
      return { modelType: c.model_type, hiddenSize: h, modules, defaultLoraTargets: ['q_proj', 'v_proj'] };
    }
    case 'gpt2': {
      const c = parse(gpt2Schema);
      const e = c.n_embd;
      const inner = c.n_inner ?? 4 * e;
      const conv1d = (path: string, inFeatures: number, outFeatures: number): void => {
        modules.push({ path, kind: 'conv1d', inFeatures, outFeatures, bias: true });
      };
      modules.push({ path: 'transformer.wte', kind: 'embedding', inFeatures: c.vocab_size, outFeatures: e, bias: false });
      modules.push({ path: 'transformer.wpe', kind: 'embedding', inFeatures: c.n_positions, outFeatures: e, bias: false });
      for (let layer = 0; layer < c.n_layer; layer++) {
        const p = `transformer.h.${layer}`;
        conv1d(`${p}.attn.c_attn`, e, 3 * e);
        conv1d(`${p}.attn.c_proj`, e, e);
        conv1d(`${p}.mlp.c_fc`, e, inner);
        conv1d(`${p}.mlp.c_proj`, inner, e);
      }
      linear('lm_head', e, c.vocab_size, false);
      return { modelType: 'gpt2', hiddenSize: e, modules, defaultLoraTargets: ['c_attn'] };
    }
    case 'bloom': {
      const c = parse(bloomSchema);
      const h = c.hidden_size;
      modules.push({ path: 'transformer.word_embeddings', kind: 'embedding', inFeatures: c.vocab_size, outFeatures: h, bias: false });
      for (let layer = 0; layer < c.n_layer; layer++) {
        const p = `transformer.h.${layer}`;
        linear(`${p}.self_attention.query_key_value`, h, 3 * h, true);
        linear(`${p}.self_attention.dense`, h, h, true);
        linear(`${p}.mlp.dense_h_to_4h`, h, 4 * h, true);
        linear(`${p}.mlp.dense_4h_to_h`, 4 * h, h, true);
      }
      linear('lm_head', h, c.vocab_size, false);
      return { modelType: 'bloom', hiddenSize: h, modules, defaultLoraTargets: ['query_key_value'] };
    }
    default:
      throw new CheckpointError(
        `${source}: model_type ${JSON.stringify(modelType)} is not a supported causal LM (llama, qwen2, mistral, gpt2, bloom)`,
      );
  }
}

/** Short names a user may give as target_modules: each module path's last component, deduplicated, in table order. */
export function moduleShortNames(table: DecoderModuleTable): string[] {
  return [...new Set(table.modules.map((m) => m.path.slice(m.path.lastIndexOf('.') + 1)))];
}
