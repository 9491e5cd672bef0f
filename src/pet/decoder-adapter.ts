import type { DecoderGemm } from '../model/families/decoder/types.js';

/**
 * A decoder adapter in the form the generation engine executes: its tensors in
 * one float block (for the shared PET GPU pool) plus where each delta attaches.
 * Offsets are relative to the block; the pool rebases them when resident.
 */
export interface DecoderLoraDelta {
  /** -1 for lm_head. */
  layer: number;
  gemm: DecoderGemm | 'lm_head';
  /** First output column inside the fused GEMM output. */
  colOffset: number;
  /** Input width (K) and output width (N) of the module. */
  K: number;
  N: number;
  /** This module's rank (per adapter and per module: never padded). */
  rank: number;
  /** A [rank, K] and B [N, rank] (torch.nn.Linear orientation) in the float block. */
  aOff: number;
  bOff: number;
  scale: number;
}

/** An IA³ vector: scales a module's output columns, or (feedforward modules) its input columns. */
export interface DecoderScale {
  layer: number;
  gemm: DecoderGemm;
  mode: 'output' | 'input';
  /** First scaled column: of the fused GEMM output (output mode), or 0 (input mode). */
  colOffset: number;
  width: number;
  off: number;
}

export interface DecoderAdapter {
  kind: 'lora' | 'ia3';
  floats: Float32Array;
  words: Uint32Array;
  loras: DecoderLoraDelta[];
  scales: DecoderScale[];
  /** modules_to_save embed_tokens: the task's own token embedding [V, H] in the float block, or null. */
  embedOff: number | null;
  /** modules_to_save lm_head: the task's own head [V, H] in the float block, or null. */
  lmHeadOff: number | null;
  /**
   * Whether the adapter changes any layer's output, and so the keys and values
   * cached for later layers (an lm_head-only adapter does not): the reason
   * prefix blocks are keyed by task.
   */
  touchesKv: boolean;
  /** Largest rank of any module (sizes the step's shrink scratch). */
  maxRank: number;
}
