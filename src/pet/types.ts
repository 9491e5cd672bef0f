/**
 * Host-side representation of a parsed, validated PET: what importers
 * produce and what the registry, the GPU pool and the batch planner consume.
 * All float data is f32 here; the pool converts to the serving dtype.
 * Semantics of each kind: docs/pet-format.md.
 */

export type PetKind = 'lora' | 'adapter' | 'diff' | 'mask' | 'bitfit' | 'ia3';
export const PET_KINDS: readonly PetKind[] = ['lora', 'adapter', 'diff', 'mask', 'bitfit', 'ia3'];

/** Linear layers of an encoder layer that PETs attach to. */
export type LinearSite = 'query' | 'key' | 'value' | 'attention_output' | 'intermediate' | 'output';
export const LINEAR_SITES: readonly LinearSite[] = ['query', 'key', 'value', 'attention_output', 'intermediate', 'output'];

export type LayerNormSite = 'attention_layernorm' | 'output_layernorm';

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

export function siteModule(layer: number, site: LinearSite | LayerNormSite): string {
  return `encoder.layer.${layer}.${SITE_MODULE[site]}`;
}

/** ΔY = scale · (X·Aᵀ)·Bᵀ */
export interface LoraSite {
  layer: number;
  site: LinearSite;
  rank: number;
  scale: number;
  /** [rank, in] */
  a: Float32Array;
  /** [out, rank] */
  b: Float32Array;
}

/** h ← h + W_up·act(W_down·h + b_down) + b_up, applied to the site's output before residual + LayerNorm. */
export interface AdapterSite {
  layer: number;
  site: 'attention_output' | 'output';
  bottleneck: number;
  activation: 'relu' | 'gelu';
  /** [bottleneck, H] */
  downWeight: Float32Array;
  /** [bottleneck] */
  downBias: Float32Array;
  /** [H, bottleneck] */
  upWeight: Float32Array;
  /** [H] */
  upBias: Float32Array;
}

/** ΔY = X·ΔWᵀ + Δb with ΔW sparse (flat indices row·in + col, strictly increasing). */
export interface DiffSite {
  layer: number;
  site: LinearSite;
  indices: Int32Array;
  values: Float32Array;
  /** [out] or null */
  biasDelta: Float32Array | null;
}

/** Y = X·(W⊙M)ᵀ + b; `removed` = flat indices where M = 0, strictly increasing. */
export interface MaskSite {
  layer: number;
  site: LinearSite;
  removed: Int32Array;
}

/** Full replacement values; absent sites keep the base values. */
export interface BitfitParams {
  biases: { layer: number; site: LinearSite; bias: Float32Array }[];
  layerNorms: { layer: number; site: LayerNormSite; gamma: Float32Array; beta: Float32Array }[];
  embeddingsLayerNorm: { gamma: Float32Array; beta: Float32Array } | null;
  poolerBias: Float32Array | null;
}

/** PEFT IA³: 'output' scales the site's output (after bias), 'input' scales its input. */
export interface Ia3Site {
  layer: number;
  site: LinearSite;
  mode: 'output' | 'input';
  scale: Float32Array;
}

export type PetSpec =
  | { kind: 'lora'; sites: LoraSite[] }
  | { kind: 'adapter'; sites: AdapterSite[] }
  | { kind: 'diff'; sites: DiffSite[] }
  | { kind: 'mask'; sites: MaskSite[] }
  | { kind: 'bitfit'; params: BitfitParams }
  | { kind: 'ia3'; sites: Ia3Site[] };

/** A task's own classifier; tasks without one are embedding tasks (pooled output). */
export interface TaskHead {
  /** [numLabels, H] */
  weight: Float32Array;
  /** [numLabels] */
  bias: Float32Array;
  id2label: string[];
}

export interface PetBundle {
  pet: PetSpec;
  head: TaskHead | null;
  /** Where it was loaded from (for messages). */
  source: string;
  /** 'peft' (Hugging Face PEFT directory) or 'bundle' (pet.json + pet.safetensors). */
  format: 'peft' | 'bundle';
}

/** Host bytes of a bundle's tensors (f32). */
export function petHostBytes(b: PetBundle): number {
  const arrays: ArrayBufferView[] = [];
  const p = b.pet;
  switch (p.kind) {
    case 'lora':
      for (const s of p.sites) arrays.push(s.a, s.b);
      break;
    case 'adapter':
      for (const s of p.sites) arrays.push(s.downWeight, s.downBias, s.upWeight, s.upBias);
      break;
    case 'diff':
      for (const s of p.sites) arrays.push(s.indices, s.values, ...(s.biasDelta ? [s.biasDelta] : []));
      break;
    case 'mask':
      for (const s of p.sites) arrays.push(s.removed);
      break;
    case 'bitfit':
      for (const s of p.params.biases) arrays.push(s.bias);
      for (const s of p.params.layerNorms) arrays.push(s.gamma, s.beta);
      if (p.params.embeddingsLayerNorm) arrays.push(p.params.embeddingsLayerNorm.gamma, p.params.embeddingsLayerNorm.beta);
      if (p.params.poolerBias) arrays.push(p.params.poolerBias);
      break;
    case 'ia3':
      for (const s of p.sites) arrays.push(s.scale);
      break;
  }
  if (b.head) arrays.push(b.head.weight, b.head.bias);
  return arrays.reduce((n, a) => n + a.byteLength, 0);
}
