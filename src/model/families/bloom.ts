import { parseBloomConfig } from './bloom/config.js';
import { bloomLinearSites, loadBloomWeights } from './bloom/weights.js';
import type { DecoderFamily } from './decoder/types.js';

/**
 * BLOOM (BloomForCausalLM): ALiBi instead of position embeddings, a LayerNorm
 * after the word embeddings, query_key_value fused per head, tied lm_head.
 */
export const bloomFamily: DecoderFamily = {
  kind: 'decoder',
  name: 'bloom',
  architectures: ['BloomForCausalLM'],
  modelTypes: ['bloom'],
  parseConfig: parseBloomConfig,
  loadWeights: loadBloomWeights,
  linearSites: bloomLinearSites,
  vocabModules: { embed: 'transformer.word_embeddings', lmHead: 'lm_head' },
  embeddingModules: (c) => [{ module: 'transformer.word_embeddings', num: c.vocabSize, dim: c.hiddenSize }],
  defaultLoraTargets: ['query_key_value'],
};
