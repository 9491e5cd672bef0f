// Where PETs attach in the base model: the one lookup PET kinds, formats and
// the packer use for site names, module paths, shapes, base weights and the
// graph GEMM a site runs in. It answers from the model family's site table
// (src/model/families/<family>/sites.ts); what that table does not hold yet
// (the bundle's adapter paths, torch's module list for PEFT matching, where
// an input scaling folds in) is written here, BERT's, and nowhere else in src/pet.

import type { BertCheckpoint, LayerNormWeights, LinearWeights } from '../model/checkpoint.js';
import { bertFamily, type BertConfig, type BertLayerNormSite, type BertLinearSite } from '../model/families/bert.js';
import type { GemmSite } from '../model/pet-graph-input.js';

export type { GemmSite };

/**
 * The PET sites of the served family (src/model/families/<family>/sites.ts).
 * BERT is the one family today; when a second arrives, these functions take
 * the checkpoint's `family` (every caller has the checkpoint or its config).
 */
const table = bertFamily.sites;

/** Linear layers of an encoder layer that PETs attach to. */
export type LinearSite = BertLinearSite;
export const LINEAR_SITES: readonly LinearSite[] = table.linearSites;

export type LayerNormSite = BertLayerNormSite;
export const LAYER_NORM_SITES: readonly LayerNormSite[] = table.layerNormSites;

/** Linear sites an adapter follows (before residual + LayerNorm); the engine inserts one at each, in every layer. */
export type AdapterSiteName = Extract<LinearSite, 'attention_output' | 'output'>;
const isAdapterSiteName = (site: LinearSite): site is AdapterSiteName => site === 'attention_output' || site === 'output';
export const ADAPTER_SITES: readonly AdapterSiteName[] = table.adapterSites.filter(isAdapterSiteName);

/** Linear sites whose input scaling folds into an existing kernel (IA³ input mode). */
export const INPUT_SCALE_SITES: readonly LinearSite[] = table.inputScaleSites;

export const EMBEDDINGS_LAYER_NORM_MODULE = table.embeddingsLayerNormModule!;
export const POOLER_MODULE = table.poolerModule!;

/** Hugging Face module path (no model prefix) of a site in layer `layer`, e.g. encoder.layer.0.attention.self.query. */
export function siteModule(config: BertConfig, layer: number, site: LinearSite | LayerNormSite): string {
  return isLinearSite(site) ? table.linear(config, layer, site).module : table.layerNormModule(layer, site);
}

function isLinearSite(site: string): site is LinearSite {
  return (LINEAR_SITES as readonly string[]).includes(site);
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
  const { outDim, inDim } = table.linear(config, 0, site);
  return { outDim, inDim };
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
    for (const site of LINEAR_SITES) sites.push({ layer, site, module: siteModule(config, layer, site) });
  }
  return sites;
}

/** (layer, site) of a module path (without `bert.`) when it is a linear site of the base. */
export function linearSiteOfModule(config: BertConfig, module: string): { layer: number; site: LinearSite } | null {
  const ref = allLinearSites(config).find((r) => r.module === module);
  return ref === undefined ? null : { layer: ref.layer, site: ref.site };
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
  return table.baseLinear(base.weights, layer, site);
}

export function baseLayerNorm(base: BertCheckpoint, layer: number, site: LayerNormSite): LayerNormWeights {
  return table.baseLayerNorm(base.weights, layer, site);
}

export function baseEmbeddingsLayerNorm(base: BertCheckpoint): LayerNormWeights {
  return base.weights.embeddingLayerNorm;
}

export function basePooler(base: BertCheckpoint): LinearWeights {
  return base.weights.pooler;
}

// ------------------------------------------------------------------ where sites run in the graph

/** Where a linear site runs in the graph: its GEMM and first output column there (q, k, v are column blocks of the fused QKV GEMM). */
export function gemmOf(config: BertConfig, layer: number, site: LinearSite): { gemm: GemmSite; colOffset: number } {
  const { gemm, colOffset } = table.linear(config, layer, site);
  return { gemm, colOffset };
}

/** Width N, input width K and base bias of a graph GEMM (a fused GEMM's bias is its sites' biases side by side). */
export function gemmInfo(base: BertCheckpoint, layer: number, gemm: GemmSite): { N: number; K: number; baseBias: Float32Array } {
  const { N, K } = table.gemmShape(base.config, gemm);
  if (gemm === 'pooler') return { N, K, baseBias: basePooler(base).bias };
  const baseBias = new Float32Array(N);
  for (const site of LINEAR_SITES) {
    const info = table.linear(base.config, layer, site);
    if (info.gemm === gemm) baseBias.set(baseLinear(base, layer, site).bias, info.colOffset);
  }
  return { N, K, baseBias };
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
