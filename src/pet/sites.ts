// Where PETs attach in the base model: the one lookup PET kinds, formats and
// the packer use for site names, module paths, shapes, base weights and the
// graph GEMM a site runs in. Every BERT name PETs need is here and nowhere
// else in src/pet; a model family (src/model/families/) answers the same
// questions through its site table, and this file is what it plugs into.

import type { BertConfig } from '../model/bert-config.js';
import type { BertCheckpoint, LayerNormWeights, LinearWeights } from '../model/checkpoint.js';
import type { GemmSite } from '../model/pet-graph-input.js';

export type { GemmSite };

/** Linear layers of an encoder layer that PETs attach to. */
export type LinearSite = 'query' | 'key' | 'value' | 'attention_output' | 'intermediate' | 'output';
export const LINEAR_SITES: readonly LinearSite[] = ['query', 'key', 'value', 'attention_output', 'intermediate', 'output'];

export type LayerNormSite = 'attention_layernorm' | 'output_layernorm';
export const LAYER_NORM_SITES: readonly LayerNormSite[] = ['attention_layernorm', 'output_layernorm'];

/** Linear sites an adapter follows (before residual + LayerNorm); the engine inserts one at each, in every layer. */
export type AdapterSiteName = 'attention_output' | 'output';
export const ADAPTER_SITES: readonly AdapterSiteName[] = ['attention_output', 'output'];

/**
 * Linear sites whose input scaling folds into an existing kernel (IA³ input
 * mode): the inputs of attention.output.dense (the attention context) and
 * output.dense (the GELU output) have one reader each; the others share theirs.
 */
export const INPUT_SCALE_SITES: readonly LinearSite[] = ['attention_output', 'output'];

/** Hugging Face module path (no `bert.` prefix) of a site in layer `layer`. */
export const SITE_MODULE: Record<LinearSite | LayerNormSite, string> = {
  query: 'attention.self.query',
  key: 'attention.self.key',
  value: 'attention.self.value',
  attention_output: 'attention.output.dense',
  intermediate: 'intermediate.dense',
  output: 'output.dense',
  attention_layernorm: 'attention.output.LayerNorm',
  output_layernorm: 'output.LayerNorm',
};

export const EMBEDDINGS_LAYER_NORM_MODULE = 'embeddings.LayerNorm';
export const POOLER_MODULE = 'pooler.dense';

export function siteModule(layer: number, site: LinearSite | LayerNormSite): string {
  return `encoder.layer.${layer}.${SITE_MODULE[site]}`;
}

/** Module path of the adapter that follows an adapter site (its tensors are `<path>.down.weight` etc.). */
export function adapterModule(layer: number, site: AdapterSiteName): string {
  return `encoder.layer.${layer}.${site === 'attention_output' ? 'attention.output' : 'output'}.adapter`;
}

/** torch.nn.Linear layout of a site: weight [outDim, inDim]. */
export interface SiteDims {
  outDim: number;
  inDim: number;
}

export function linearSiteDims(config: BertConfig, site: LinearSite): SiteDims {
  switch (site) {
    case 'intermediate':
      return { outDim: config.intermediateSize, inDim: config.hiddenSize };
    case 'output':
      return { outDim: config.hiddenSize, inDim: config.intermediateSize };
    default:
      return { outDim: config.hiddenSize, inDim: config.hiddenSize };
  }
}

/** Position of a site in LINEAR_SITES, for a stable (layer, site) order. */
export function compareSites(a: { layer: number; site: string }, b: { layer: number; site: string }): number {
  const order = (s: string): number => {
    const i = (LINEAR_SITES as readonly string[]).indexOf(s);
    return i >= 0 ? i : LINEAR_SITES.length + (LAYER_NORM_SITES as readonly string[]).indexOf(s);
  };
  return a.layer - b.layer || order(a.site) - order(b.site);
}

export interface LinearSiteRef {
  layer: number;
  site: LinearSite;
  /** Module path without `bert.`, e.g. encoder.layer.0.attention.self.query */
  module: string;
}

/** Every linear site of the base, in (layer, LINEAR_SITES) order. */
export function allLinearSites(config: BertConfig): LinearSiteRef[] {
  const sites: LinearSiteRef[] = [];
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    for (const site of LINEAR_SITES) sites.push({ layer, site, module: siteModule(layer, site) });
  }
  return sites;
}

/** (layer, site) of a module path (without `bert.`) when it is a linear site of an encoder layer. */
export function linearSiteOfModule(module: string): { layer: number; site: LinearSite } | null {
  const m = /^encoder\.layer\.(\d+)\.(.+)$/.exec(module);
  if (!m) return null;
  const site = LINEAR_SITES.find((s) => SITE_MODULE[s] === m[2]);
  return site === undefined ? null : { layer: Number(m[1]), site };
}

/**
 * Module names of BertModel (prefix '') or BertForSequenceClassification
 * (prefix 'bert.') as torch's named_modules() lists them, containers and
 * dropouts included: PEFT matches target_modules against all of them and
 * refuses a match on a module it cannot adapt, and so does the PEFT importer.
 */
export function baseModuleNames(config: BertConfig, prefix: '' | 'bert.'): string[] {
  const p = prefix;
  const names: string[] = p ? ['bert', 'dropout', 'classifier'] : [];
  names.push(`${p}embeddings`);
  for (const m of ['word_embeddings', 'position_embeddings', 'token_type_embeddings', 'LayerNorm', 'dropout']) {
    names.push(`${p}embeddings.${m}`);
  }
  names.push(`${p}encoder`, `${p}encoder.layer`);
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const l = `${p}encoder.layer.${i}`;
    names.push(l, `${l}.attention`, `${l}.attention.self`);
    names.push(`${l}.attention.self.query`, `${l}.attention.self.key`, `${l}.attention.self.value`, `${l}.attention.self.dropout`);
    names.push(`${l}.attention.output`, `${l}.attention.output.dense`, `${l}.attention.output.LayerNorm`, `${l}.attention.output.dropout`);
    names.push(`${l}.intermediate`, `${l}.intermediate.dense`, `${l}.intermediate.intermediate_act_fn`);
    names.push(`${l}.output`, `${l}.output.dense`, `${l}.output.LayerNorm`, `${l}.output.dropout`);
  }
  names.push(`${p}pooler`, `${p}pooler.dense`, `${p}pooler.activation`);
  return names;
}

// ------------------------------------------------------------------ base weights

export function baseLinear(base: BertCheckpoint, layer: number, site: LinearSite): LinearWeights {
  const w = base.weights.layers[layer]!;
  switch (site) {
    case 'query':
      return w.query;
    case 'key':
      return w.key;
    case 'value':
      return w.value;
    case 'attention_output':
      return w.attentionOutput;
    case 'intermediate':
      return w.intermediate;
    case 'output':
      return w.output;
  }
}

export function baseLayerNorm(base: BertCheckpoint, layer: number, site: LayerNormSite): LayerNormWeights {
  const w = base.weights.layers[layer]!;
  return site === 'attention_layernorm' ? w.attentionLayerNorm : w.outputLayerNorm;
}

export function baseEmbeddingsLayerNorm(base: BertCheckpoint): LayerNormWeights {
  return base.weights.embeddingLayerNorm;
}

export function basePooler(base: BertCheckpoint): LinearWeights {
  return base.weights.pooler;
}

// ------------------------------------------------------------------ where sites run in the graph

/** Where a linear site lives inside the graph's GEMMs (q, k, v are column blocks of the fused QKV GEMM). */
export function gemmOf(site: LinearSite, hidden: number): { gemm: GemmSite; colOffset: number } {
  switch (site) {
    case 'query':
      return { gemm: 'qkv', colOffset: 0 };
    case 'key':
      return { gemm: 'qkv', colOffset: hidden };
    case 'value':
      return { gemm: 'qkv', colOffset: 2 * hidden };
    default:
      return { gemm: site, colOffset: 0 };
  }
}

/** Width N, input width K and base bias of a graph GEMM. */
export function gemmInfo(base: BertCheckpoint, layer: number, gemm: GemmSite): { N: number; K: number; baseBias: Float32Array } {
  const w = base.weights;
  const H = base.config.hiddenSize;
  if (gemm === 'pooler') return { N: H, K: H, baseBias: w.pooler.bias };
  const l = w.layers[layer]!;
  switch (gemm) {
    case 'qkv': {
      const bias = new Float32Array(3 * H);
      bias.set(l.query.bias, 0);
      bias.set(l.key.bias, H);
      bias.set(l.value.bias, 2 * H);
      return { N: 3 * H, K: H, baseBias: bias };
    }
    case 'attention_output':
      return { N: l.attentionOutput.outDim, K: l.attentionOutput.inDim, baseBias: l.attentionOutput.bias };
    case 'intermediate':
      return { N: l.intermediate.outDim, K: l.intermediate.inDim, baseBias: l.intermediate.bias };
    case 'output':
      return { N: l.output.outDim, K: l.output.inDim, baseBias: l.output.bias };
  }
}

/**
 * Where the input scaling of an INPUT_SCALE_SITES site folds in: output.dense's
 * input is the intermediate GEMM's GELU output (a post-activation scale there);
 * attention.output.dense's input is the attention context (a scale on its store).
 */
export function inputScaleTarget(site: LinearSite): { gemm: GemmSite; colOffset: number } | 'attention-context' | null {
  if (site === 'output') return { gemm: 'intermediate', colOffset: 0 };
  if (site === 'attention_output') return 'attention-context';
  return null;
}
