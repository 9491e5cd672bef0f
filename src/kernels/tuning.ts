/**
 * Tuning knobs of the kernels, in one place. The defaults were chosen by `npm run bench:kernels` on the
 * devices named in bench/results/; the self-tuner (kernel-tuner.ts) replaces `defaultKernelChoices` per
 * adapter with what it measures there.
 */
import type { KernelChoices } from './types.js';

export const tuning: {
  segGemvMaxMeanRows: number;
  smallGemmMaxRows: number;
} = {
  /**
   * Segmented GEMMs whose segments average at most this many rows use the row layout
   * (seg_gemv, lanes along columns): measured 1.0-2.9x faster up to 5 rows per segment,
   * level at 8, slower from 12 on lavapipe (bench/results/seg-gemv-*.md).
   */
  segGemvMaxMeanRows: 6,
  /** GEMMs with at most this many rows (decode steps) use `KernelChoices.smallGemm`. */
  smallGemmMaxRows: 16,
};

/** What a runner records with before (or without) self-tuning. */
export const defaultKernelChoices: KernelChoices = {
  /**
   * 'sgx' 16x4: 2.5-3x rb 4x8's GFLOP/s on lavapipe (bench/results/kernel-tune-*-2026120[3]*); without
   * the `subgroups` feature gemm() records rb 4x8, the previous default, instead.
   */
  gemm: { variant: 'sgx', rowsPerInvocation: 16, colsPerInvocation: 4 },
  smallGemm: { variant: 'rb', rowsPerInvocation: 4, colsPerInvocation: 8 },
  /**
   * 'lanes' (one query per invocation, K/V shared by subgroup shuffles): 12x the resident form on lavapipe at
   * 8x128 (bench/results/kernel-tune-*-20261203*); the resident form at 64 where the adapter lacks one subgroup size.
   */
  attention: { form: 'lanes', workgroupSize: 64 },
  rowWorkgroupSize: 64,
};
