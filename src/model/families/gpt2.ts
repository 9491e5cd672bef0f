import type { DecoderFamily } from './decoder/types.js';
import { parseGpt2Config } from './gpt2/config.js';
import { gpt2LinearSites, loadGpt2Weights } from './gpt2/weights.js';

/**
 * GPT-2 (GPT2LMHeadModel): learned positions, pre-LayerNorm blocks, gelu_new,
 * Conv1D weights stored transposed, fused c_attn, tied lm_head.
 */
export const gpt2Family: DecoderFamily = {
  kind: 'decoder',
  name: 'gpt2',
  architectures: ['GPT2LMHeadModel'],
  modelTypes: ['gpt2'],
  parseConfig: parseGpt2Config,
  loadWeights: loadGpt2Weights,
  linearSites: gpt2LinearSites,
  vocabModules: { embed: 'transformer.wte', lmHead: 'lm_head' },
  embeddingModules: (c) => [
    { module: 'transformer.wte', num: c.vocabSize, dim: c.hiddenSize },
    { module: 'transformer.wpe', num: c.maxPositionEmbeddings, dim: c.hiddenSize },
  ],
  defaultLoraTargets: ['c_attn'],
};
