/**
 * Tuning knobs of the kernels, in one place. Values chosen by
 * `npm run bench:kernels` on the devices named in bench/results/.
 */
import type { GemmVariant } from './types.js';

export const tuning: {
  gemmVariant: GemmVariant;
  gemmBK: number;
  gemmRowsPerInvocation: number;
  gemmColsPerInvocation: 4 | 8;
  rowWorkgroupSize: number;
  attentionWorkgroupSize: number;
  segGemvMaxMeanRows: number;
} = {
  /** GEMM used by the model: 'rb' measured fastest on lavapipe (bench/results/kernels-*.json). */
  gemmVariant: 'rb',
  /** K-slice staged per iteration by the tiled GEMM. */
  gemmBK: 16,
  /** Output rows per invocation of the register-blocked GEMM (each also owns 4 columns). */
  gemmRowsPerInvocation: 4,
  /** Output columns per invocation of the register-blocked GEMM (4 or 8). */
  gemmColsPerInvocation: 8,
  /** Invocations per workgroup of row-wise kernels (LayerNorm, softmax). */
  rowWorkgroupSize: 64,
  /** Invocations per (query, head) workgroup in attention. */
  attentionWorkgroupSize: 64,
  /**
   * Segmented GEMMs whose segments average at most this many rows use the row layout
   * (seg_gemv, lanes along columns): measured 1.0-2.9x faster up to 5 rows per segment,
   * level at 8, slower from 12 on lavapipe (bench/results/seg-gemv-*.md).
   */
  segGemvMaxMeanRows: 6,
};
