import { parseBertConfig, type BertConfig } from './bert/config.js';
import { uploadBertWeights, type GpuBertWeights } from './bert/gpu-weights.js';
import { batchBuffers, recordBertForward, type BatchBuffers } from './bert/graph.js';
import { bertSites, type BertGemm, type BertLayerNormSite, type BertLinearSite } from './bert/sites.js';
import { loadBertWeights, type BertWeights } from './bert/weights.js';
import type { ModelFamily } from './types.js';

/**
 * The BERT encoder family (BertModel, BertForSequenceClassification): absolute
 * learned positions, token types, post-LayerNorm blocks, a tanh pooler on each
 * sequence's first token, an optional classifier. Its parts: config.ts (the
 * config.json keys), weights.ts (tensor names), gpu-weights.ts (upload, fused
 * QKV), graph.ts (the forward pass over packed batches), sites.ts (PET sites).
 */
export type BertFamily = ModelFamily<BertConfig, BertWeights, GpuBertWeights, BatchBuffers, BertLinearSite, BertLayerNormSite, BertGemm>;

export const bertFamily: BertFamily = {
  name: 'bert',
  architectures: ['BertModel', 'BertForSequenceClassification'],
  modelTypes: ['bert'],
  parseConfig: parseBertConfig,
  loadWeights: loadBertWeights,
  uploadWeights: uploadBertWeights,
  sites: bertSites,
  heads: (config, numLabels) => ({ pooledWidth: config.hiddenSize, numLabels, poolRow: 'first' }),
  batchBuffers,
  recordForward: recordBertForward,
};

export type { BertConfig } from './bert/config.js';
export type { GpuBertWeights } from './bert/gpu-weights.js';
export type { BertGemm, BertLayerNormSite, BertLinearSite, BertSlotSite } from './bert/sites.js';
export type { BertWeights, EncoderLayerWeights } from './bert/weights.js';
