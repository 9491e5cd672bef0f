import type { BufferRange } from '../gpu/batch-encoder.js';
import type { SegmentTables } from '../kernels/segmented.js';
import type { BertConfig } from './bert-config.js';

/**
 * What the BERT graph needs to run PET work inside a batch. The graph knows
 * *slots* (a per-row index into per-site tables) and *segment tables*; it
 * never sees tasks or PET kinds (those live in src/pet and src/engine).
 */

/** The GEMMs of the base graph (query/key/value run as one fused `qkv` GEMM). */
export type GemmSite = 'qkv' | 'attention_output' | 'intermediate' | 'output' | 'pooler';
export type LayerGemmSite = Exclude<GemmSite, 'pooler'>;

/** Slot-table sites per layer: 4 GEMMs, 2 LayerNorms, the attention context. */
export const SITES_PER_LAYER = 7;
const LAYER_SITE_INDEX = {
  qkv: 0,
  attention_output: 1,
  intermediate: 2,
  output: 3,
  attention_layernorm: 4,
  output_layernorm: 5,
  context: 6,
} as const;
export type SlotSite = keyof typeof LAYER_SITE_INDEX | 'pooler' | 'embeddings';

/** Index of a site in the slot table ([site][slot][4 u32]). */
export function slotSiteIndex(cfg: BertConfig, layer: number, site: SlotSite): number {
  if (site === 'pooler') return SITES_PER_LAYER * cfg.numHiddenLayers;
  if (site === 'embeddings') return SITES_PER_LAYER * cfg.numHiddenLayers + 1;
  return SITES_PER_LAYER * layer + LAYER_SITE_INDEX[site];
}

export function slotSiteCount(cfg: BertConfig): number {
  return SITES_PER_LAYER * cfg.numHiddenLayers + 2;
}

/** PET work at one GEMM site of one layer (null parts = none in this batch). */
export interface SiteDeltaWork {
  /** Low-rank shrink (X·Aᵀ → U) and expand (delta += s·U·Bᵀ). */
  shrink: SegmentTables | null;
  expand: SegmentTables | null;
  /** Sparse deltas (diff values / mask from W) into delta. */
  sparse: SegmentTables | null;
  /** Adapter down (act(Z·W_dᵀ + b_d) → U) and up (Z += U·W_uᵀ + b_u) on the GEMM's output. */
  adapterDown: SegmentTables | null;
  adapterUp: SegmentTables | null;
  /** U scratch elements this site needs. */
  scratchElems: number;
}

/**
 * How the graph lays out one batch's PET operators, decided per batch by the
 * operator scheduler (src/scheduler/operator-scheduler.ts).
 */
export interface OperatorDecisions {
  /**
   * Per slot-table site (slotSiteIndex): 1 if some row of the batch has work
   * there. Sites with 0 run the plain shared kernel (no slot lookups, no delta
   * epilogue); null = all sites task-aware.
   */
  activeSlotSites: Uint8Array | null;
  /**
   * Record a site's sparse delta between the LoRA shrink and expand instead of
   * after the expand: shrink and sparse share no written buffer, so nothing
   * orders them and a GPU may overlap them; expand waits for both anyway.
   */
  interleaveSparse: boolean;
}

export const siteKey = (layer: number, gemm: GemmSite): string => `${layer}:${gemm}`;

export interface PetGraphInput {
  numSlots: number;
  /** u32 [tokens] / [sequences]: slot of each row. */
  tokenSlot: GPUBuffer;
  seqSlot: GPUBuffer;
  /** u32 [site][slot][4]. */
  slotTable: GPUBuffer;
  /** The PET pool (floats in the serving dtype + u32 words). */
  pool: GPUBuffer;
  /** [deltaRows, N] per-site delta scratch (rows deltaRow0..). */
  delta: GPUBuffer;
  deltaRow0: number;
  deltaRows: number;
  /** Low-rank / adapter intermediate scratch. */
  scratch: GPUBuffer;
  sites: ReadonlyMap<string, SiteDeltaWork>;
  /** Sequences [0, baseHeadRows) use the base classifier; task heads follow in one segmented GEMM. */
  baseHeadRows: number;
  taskHeads: SegmentTables | null;
  /** Baseline mode for benchmarks: one dispatch per task segment instead of one per kind and site. */
  perTaskDispatch?: boolean;
  /** Operator-scheduler decisions for this batch (absent: every site task-aware, fixed op order). */
  operators?: OperatorDecisions | undefined;
  /** Uploaded segment tables (records and tiles) by table. */
  ranges(t: SegmentTables): { records: BufferRange; tiles: BufferRange };
}
