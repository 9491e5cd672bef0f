import type { GemmSite } from '../../pet-graph-input.js';
import type { LayerNormWeights, LinearWeights } from '../../tensor-source.js';
import type { GemmShape, LinearSiteInfo, PetSiteTable } from '../types.js';
import type { BertConfig } from './config.js';
import type { BertWeights } from './weights.js';

/**
 * The PET sites of a BERT encoder: its linear layers and LayerNorms by their
 * Hugging Face module names, where each runs in the graph, and the slot-table
 * site index of every place a slot lookup happens.
 */

/** Linear layers of an encoder layer that PETs attach to. */
export type BertLinearSite = 'query' | 'key' | 'value' | 'attention_output' | 'intermediate' | 'output';
export type BertLayerNormSite = 'attention_layernorm' | 'output_layernorm';
/** The GEMMs of the graph (query/key/value run as one fused `qkv` GEMM). */
export type BertGemm = 'qkv' | 'attention_output' | 'intermediate' | 'output';

// src/pet's GemmSite must name exactly these GEMMs (until src/pet takes these types).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const GEMM_NAMES_AGREE: Same<GemmSite, BertGemm | 'pooler'> = true;

const LINEAR_SITES: readonly BertLinearSite[] = ['query', 'key', 'value', 'attention_output', 'intermediate', 'output'];
const LAYER_NORM_SITES: readonly BertLayerNormSite[] = ['attention_layernorm', 'output_layernorm'];
const LAYER_GEMMS: readonly BertGemm[] = ['qkv', 'attention_output', 'intermediate', 'output'];

/** Hugging Face module path (no `bert.` prefix) of a site inside `encoder.layer.N`. */
const SITE_MODULE: Record<BertLinearSite | BertLayerNormSite, string> = {
  query: 'attention.self.query',
  key: 'attention.self.key',
  value: 'attention.self.value',
  attention_output: 'attention.output.dense',
  intermediate: 'intermediate.dense',
  output: 'output.dense',
  attention_layernorm: 'attention.output.LayerNorm',
  output_layernorm: 'output.LayerNorm',
};

const layerModule = (layer: number, site: BertLinearSite | BertLayerNormSite): string => `encoder.layer.${layer}.${SITE_MODULE[site]}`;

/** Slot-table sites per layer: 4 GEMMs, 2 LayerNorms, the attention context; then pooler, embeddings. */
const SITES_PER_LAYER = 7;
const LAYER_SLOT_SITE = {
  qkv: 0,
  attention_output: 1,
  intermediate: 2,
  output: 3,
  attention_layernorm: 4,
  output_layernorm: 5,
  context: 6,
} as const;
export type BertSlotSite = keyof typeof LAYER_SLOT_SITE | 'pooler' | 'embeddings';

/** Output width N, input width K of each GEMM, and the column block of its delta flags (q | k | v for the fused QKV). */
function gemmShape(cfg: BertConfig, gemm: BertGemm | 'pooler'): GemmShape {
  const H = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  switch (gemm) {
    case 'qkv':
      return { N: 3 * H, K: H, deltaBlock: H };
    case 'intermediate':
      return { N: I, K: H, deltaBlock: I };
    case 'output':
      return { N: H, K: I, deltaBlock: H };
    case 'attention_output':
    case 'pooler':
      return { N: H, K: H, deltaBlock: H };
  }
}

function linear(cfg: BertConfig, layer: number, site: BertLinearSite): LinearSiteInfo<BertGemm> {
  const H = cfg.hiddenSize;
  const module = layerModule(layer, site);
  switch (site) {
    case 'query':
    case 'key':
    case 'value':
      return { module, outDim: H, inDim: H, gemm: 'qkv', colOffset: { query: 0, key: H, value: 2 * H }[site] };
    default: {
      const { N, K } = gemmShape(cfg, site);
      return { module, outDim: N, inDim: K, gemm: site, colOffset: 0 };
    }
  }
}

function baseLinear(w: BertWeights, layer: number, site: BertLinearSite): LinearWeights {
  const l = w.layers[layer]!;
  switch (site) {
    case 'query':
      return l.query;
    case 'key':
      return l.key;
    case 'value':
      return l.value;
    case 'attention_output':
      return l.attentionOutput;
    case 'intermediate':
      return l.intermediate;
    case 'output':
      return l.output;
  }
}

function baseLayerNorm(w: BertWeights, layer: number, site: BertLayerNormSite): LayerNormWeights {
  const l = w.layers[layer]!;
  return site === 'attention_layernorm' ? l.attentionLayerNorm : l.outputLayerNorm;
}

/** Index of a site in the slot table ([site][slot][SLOT_RECORD_WORDS]); pooler and embeddings follow the layers. */
function slotSiteIndex(cfg: BertConfig, layer: number, site: BertSlotSite): number {
  if (site === 'pooler') return SITES_PER_LAYER * cfg.numHiddenLayers;
  if (site === 'embeddings') return SITES_PER_LAYER * cfg.numHiddenLayers + 1;
  return SITES_PER_LAYER * layer + LAYER_SLOT_SITE[site];
}

export const bertSites: PetSiteTable<BertConfig, BertWeights, BertLinearSite, BertLayerNormSite, BertGemm> = {
  linearSites: LINEAR_SITES,
  layerNormSites: LAYER_NORM_SITES,
  adapterSites: ['attention_output', 'output'],
  // The inputs of attention.output.dense (the attention context) and output.dense
  // (the GELU output) have one reader each; the others share their input.
  inputScaleSites: ['attention_output', 'output'],
  layerGemms: LAYER_GEMMS,
  embeddingsLayerNormModule: 'embeddings.LayerNorm',
  poolerModule: 'pooler.dense',
  classifierModule: 'classifier',
  linear,
  layerNormModule: layerModule,
  baseLinear,
  baseLayerNorm,
  gemmShape,
  slotSiteCount: (cfg) => SITES_PER_LAYER * cfg.numHiddenLayers + 2,
  slotSiteIndex,
};
