import type { BufferRange } from '../gpu/batch-encoder.js';
import type { SegmentTables } from '../kernels/segmented.js';

/**
 * What a family's graph needs to run PET work inside a batch. The graph knows
 * *slots* (a per-row index into per-site tables) and *segment tables*; it
 * never sees tasks or PET kinds (those live in src/pet and src/engine).
 */

/**
 * `${layer}:${site}`: the one spelling of a (layer, site) map key (sites of no
 * layer, the pooler and the embeddings, use layer -1). Build keys with siteKey
 * and read them back with parseSiteKey, never by hand.
 */
export type SiteKey<S extends string = string> = `${number}:${S}`;
export const siteKey = <S extends string>(layer: number, site: S): SiteKey<S> => `${layer}:${site}`;
export function parseSiteKey<S extends string>(key: SiteKey<S> | string): { layer: number; site: S } {
  const colon = key.indexOf(':');
  return { layer: Number(key.slice(0, colon)), site: key.slice(colon + 1) as S };
}

/** PET work at one GEMM site of one layer (null parts = none in this batch). */
export interface SiteDeltaWork {
  layer: number;
  /** The family's GEMM at this site. */
  gemm: string;
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
   * Per slot-table site (the family's slotSiteIndex): 1 if some row of the batch has work
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

export interface PetGraphInput {
  numSlots: number;
  /** u32 [tokens] / [sequences]: slot of each row. */
  tokenSlot: GPUBuffer;
  seqSlot: GPUBuffer;
  /** u32 [site][slot][SLOT_RECORD_WORDS] (kernels/slot-record.ts). */
  slotTable: GPUBuffer;
  /** The PET pool (floats in the serving dtype + u32 words). */
  pool: GPUBuffer;
  /** [deltaRows, N] per-site delta scratch (rows deltaRow0..). */
  delta: GPUBuffer;
  deltaRow0: number;
  deltaRows: number;
  /** Low-rank / adapter intermediate scratch. */
  scratch: GPUBuffer;
  sites: ReadonlyMap<SiteKey, SiteDeltaWork>;
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

/**
 * BERT's GEMM names as src/pet still spells them (= BertGemm | 'pooler', checked in
 * families/bert/sites.ts); PET kinds move to the family's site table
 * (`family.sites`) and then this goes.
 */
export type GemmSite = 'qkv' | 'attention_output' | 'intermediate' | 'output' | 'pooler';
