import { parseLlamaConfig, type LlamaConfig } from './llama/config.js';
import { llamaLinearSites, loadLlamaWeights } from './llama/weights.js';
import type { DecoderFamily } from './decoder/types.js';

/**
 * The Llama family (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM):
 * RMSNorm, SwiGLU, rotary positions with rope_scaling, grouped-query attention,
 * Qwen2's q/k/v biases, tied or separate lm_head. Its parts: llama/config.ts
 * (config.json keys), llama/weights.ts (tensor names, PEFT module paths).
 */
export const llamaFamily: DecoderFamily<LlamaConfig> = {
  kind: 'decoder',
  name: 'llama',
  architectures: ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'],
  modelTypes: ['llama', 'mistral', 'qwen2'],
  parseConfig: parseLlamaConfig,
  loadWeights: loadLlamaWeights,
  linearSites: llamaLinearSites,
  vocabModules: { embed: 'model.embed_tokens', lmHead: 'lm_head' },
  embeddingModules: (c) => [{ module: 'model.embed_tokens', num: c.vocabSize, dim: c.hiddenSize }],
  defaultLoraTargets: ['q_proj', 'v_proj'],
};

export type { LlamaConfig } from './llama/config.js';
