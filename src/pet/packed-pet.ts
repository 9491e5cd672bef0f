import type { BertCheckpoint } from '../model/checkpoint.js';
import { gemmInfo, gemmOf, type GemmSite, type LayerNormSite, type LinearSite } from './sites.js';

export type { GemmSite };

/**
 * A PET in the form the engine executes: its tensors laid out as one block of
 * float data and one block of u32 data (for the GPU pool), plus *attachments*
 * that say how those tensors plug into the shared graph. Offsets here are
 * relative to the PET's own blocks; the pool rebases them when resident.
 *
 * Kinds translate their semantics into attachments (src/pet/kinds/*); the
 * planner and the graph only ever see attachments.
 */

export interface LowRankDelta {
  layer: number;
  gemm: GemmSite;
  /** First output column of the HF site inside the GEMM output (q: 0, k: H, v: 2H). */
  colOffset: number;
  K: number;
  N: number;
  rank: number;
  aOff: number;
  bOff: number;
  scale: number;
}

export interface SparseDelta {
  layer: number;
  gemm: GemmSite;
  colOffset: number;
  K: number;
  N: number;
  /** u32 offsets: CSR row pointers [N+1] and column indices. */
  ptrOff: number;
  idxOff: number;
  /** Float offset of the values, or null for a mask (values are −W). */
  valOff: number | null;
  /** Stored entries (for the operator scheduler's FLOP/byte counts). */
  nnz: number;
}

export interface AdapterOp {
  layer: number;
  gemm: 'attention_output' | 'output';
  bottleneck: number;
  activation: 'relu' | 'gelu';
  downW: number;
  downB: number;
  upW: number;
  upB: number;
}

export interface EpilogueOverride {
  /** Float offsets of full-width vectors (the GEMM's N), or null. */
  bias: number | null;
  preScale: number | null;
  postScale: number | null;
}

export interface PackedPet {
  floats: Float32Array;
  words: Uint32Array;
  /** key `${layer}:${gemm}` (pooler: layer -1). */
  epilogues: Map<string, EpilogueOverride>;
  /** key `${layer}:${site}` (embeddings LayerNorm: layer -1, site 'embeddings'). */
  layerNorms: Map<string, { gamma: number; beta: number }>;
  /** layer → float offset of the attention-context scale [H]. */
  contextScales: Map<number, number>;
  lowRank: LowRankDelta[];
  sparse: SparseDelta[];
  adapters: AdapterOp[];
  head: { wOff: number; bOff: number; numLabels: number } | null;
}

export const epilogueKey = (layer: number, gemm: GemmSite): string => `${layer}:${gemm}`;
export const layerNormKey = (layer: number, site: LayerNormSite | 'embeddings'): string => `${layer}:${site}`;

/** Builds a PackedPet; kinds call it, it owns the layout. */
export class PetPacker {
  private readonly floatParts: Float32Array[] = [];
  private floatCount = 0;
  private readonly wordParts: Uint32Array[] = [];
  private wordCount = 0;
  /** Full-width epilogue vectors being assembled, per GEMM and field. */
  private readonly vectors = new Map<string, { bias?: Float32Array; preScale?: Float32Array; postScale?: Float32Array }>();
  readonly packed: Omit<PackedPet, 'floats' | 'words' | 'epilogues'> = {
    layerNorms: new Map(),
    contextScales: new Map(),
    lowRank: [],
    sparse: [],
    adapters: [],
    head: null,
  };

  constructor(readonly base: BertCheckpoint) {}

  get hidden(): number {
    return this.base.config.hiddenSize;
  }

  float(data: Float32Array): number {
    const off = this.floatCount;
    this.floatParts.push(data);
    this.floatCount += data.length;
    return off;
  }

  words(data: Uint32Array): number {
    const off = this.wordCount;
    this.wordParts.push(data);
    this.wordCount += data.length;
    return off;
  }

  /** The GEMM a linear site runs in, and its first output column there. */
  gemmOf(layer: number, site: LinearSite): { gemm: GemmSite; colOffset: number } {
    return gemmOf(this.base.config, layer, site);
  }

  /** Width N, input width K and base bias of a GEMM site. */
  gemmInfo(layer: number, gemm: GemmSite): { N: number; K: number; baseBias: Float32Array } {
    return gemmInfo(this.base, layer, gemm);
  }

  /** An HF linear site inside its GEMM: column block, its width N, input width K, and base bias of the block. */
  linearSite(layer: number, site: LinearSite): { gemm: GemmSite; colOffset: number; N: number; K: number; baseBias: Float32Array } {
    const { gemm, colOffset } = this.gemmOf(layer, site);
    const info = this.gemmInfo(layer, gemm);
    const N = gemm === 'qkv' ? this.hidden : info.N;
    return { gemm, colOffset, N, K: info.K, baseBias: info.baseBias.subarray(colOffset, colOffset + N) };
  }

  private vector(layer: number, gemm: GemmSite, field: 'bias' | 'preScale' | 'postScale'): Float32Array {
    const key = epilogueKey(layer, gemm);
    let entry = this.vectors.get(key);
    if (!entry) this.vectors.set(key, (entry = {}));
    let v = entry[field];
    if (!v) {
      const info = this.gemmInfo(layer, gemm);
      v = field === 'bias' ? Float32Array.from(info.baseBias) : new Float32Array(info.N).fill(1);
      entry[field] = v;
    }
    return v;
  }

  /** Replace the bias of `values.length` columns from `colOffset` (the rest keeps the base bias). */
  setBias(layer: number, gemm: GemmSite, colOffset: number, values: ArrayLike<number>): void {
    this.vector(layer, gemm, 'bias').set(values, colOffset);
  }

  setPreScale(layer: number, gemm: GemmSite, colOffset: number, values: ArrayLike<number>): void {
    this.vector(layer, gemm, 'preScale').set(values, colOffset);
  }

  setPostScale(layer: number, gemm: GemmSite, colOffset: number, values: ArrayLike<number>): void {
    this.vector(layer, gemm, 'postScale').set(values, colOffset);
  }

  /** CSR (row pointers, column indices) from sorted flat indices row·K + col of an [N, K] matrix. */
  csr(flat: Int32Array, N: number, K: number): { ptrOff: number; idxOff: number } {
    const ptr = new Uint32Array(N + 1);
    const cols = new Uint32Array(flat.length);
    for (let j = 0; j < flat.length; j++) {
      const idx = flat[j]!;
      ptr[Math.floor(idx / K) + 1]! += 1;
      cols[j] = idx % K;
    }
    for (let n = 0; n < N; n++) ptr[n + 1]! += ptr[n]!;
    return { ptrOff: this.words(ptr), idxOff: this.words(cols) };
  }

  finish(): PackedPet {
    const epilogues = new Map<string, EpilogueOverride>();
    for (const [key, v] of this.vectors) {
      epilogues.set(key, {
        bias: v.bias ? this.float(v.bias) : null,
        preScale: v.preScale ? this.float(v.preScale) : null,
        postScale: v.postScale ? this.float(v.postScale) : null,
      });
    }
    const floats = new Float32Array(this.floatCount);
    let off = 0;
    for (const p of this.floatParts) {
      floats.set(p, off);
      off += p.length;
    }
    const words = new Uint32Array(this.wordCount);
    off = 0;
    for (const p of this.wordParts) {
      words.set(p, off);
      off += p.length;
    }
    return { ...this.packed, floats, words, epilogues };
  }
}
