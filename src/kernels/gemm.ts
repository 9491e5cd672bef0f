import type { BatchEncoder } from '../gpu/batch-encoder.js';
import type { KernelSpec } from '../gpu/pipeline-cache.js';
import { Uniforms } from '../gpu/uniforms.js';
import { tuning } from './tuning.js';
import type { Dtype, GemmVariant } from './types.js';

export type { GemmVariant } from './types.js';

/** 'gelu' is the exact erf form (BERT), 'gelu_tanh' GPT-2's tanh approximation ("gelu_new"). */
export type GemmActivation = 'none' | 'gelu' | 'gelu_tanh' | 'tanh';

export interface GemmArgs {
  /** [M, ldx] row-major input; the first K columns are used. */
  x: GPUBuffer;
  /** [N, K] weight as torch.nn.Linear stores it. */
  w: GPUBuffer;
  /** [M, ldy] output; columns [0, N) are written. */
  y: GPUBuffer;
  bias?: GPUBuffer | null;
  /** Added after the activation: y = act(x·wᵀ + b) + residual. */
  residual?: GPUBuffer | null;
  M: number;
  N: number;
  K: number;
  ldx?: number;
  ldy?: number;
  ldr?: number;
  act?: GemmActivation;
  /** Per-task epilogue (BitFit biases, IA³ scales, PET deltas) through per-row slots. */
  tasks?: GemmTaskEpilogue | null;
}

/** Buffers and offsets of the per-task epilogue (see shaders/gemm_epilogue.wgsl). */
export interface GemmTaskEpilogue {
  /** u32 [M]: slot of each row. */
  rowSlot: GPUBuffer;
  /** The slot table (slot-record.ts): per (site, slot) bias, pre-scale, post-scale offsets into `pool`, delta block flags. */
  slotTable: GPUBuffer;
  /** Element offset of this site's first record. */
  siteBase: number;
  pool: GPUBuffer;
  /** [rows, deltaLd] deltas of rows deltaRow0.. (read only for flagged slots). */
  delta: GPUBuffer;
  deltaRow0: number;
  deltaLd: number;
  /** Width of one column block of the delta flags (H for the fused QKV GEMM, else N). */
  deltaBlock: number;
}

export function gemmSpec(
  dtype: Dtype,
  opts: { variant?: GemmVariant; hasBias: boolean; act: GemmActivation; residual: boolean; tasks?: boolean },
): KernelSpec {
  const common = { DTYPE: dtype, HAS_BIAS: opts.hasBias, ACT: opts.act, RESIDUAL: opts.residual, TASKS: opts.tasks ?? false };
  switch (opts.variant ?? 'tiled') {
    case 'naive':
      return { shader: 'gemm_naive', params: common };
    case 'rb':
      return { shader: 'gemm_rb', params: { ...common, RM: tuning.gemmRowsPerInvocation, CN: tuning.gemmColsPerInvocation } };
    case 'tiled':
      return { shader: 'gemm', params: { ...common, BK: tuning.gemmBK } };
  }
}

/** Record Y = act(X·Wᵀ + b) (+ R) into `enc`. */
export function gemm(enc: BatchEncoder, dtype: Dtype, a: GemmArgs, label = 'gemm', variant: GemmVariant = 'tiled'): void {
  const ldx = a.ldx ?? a.K;
  const ldy = a.ldy ?? a.N;
  const ldr = a.ldr ?? ldy;
  if (ldx < a.K || ldy < a.N) throw new RangeError(`${label}: row stride smaller than the row`);
  if (variant === 'rb' && (a.K % 4 !== 0 || ldx % 4 !== 0)) variant = 'tiled';
  const t = a.tasks ?? null;
  const spec = gemmSpec(dtype, { variant, hasBias: !!a.bias, act: a.act ?? 'none', residual: !!a.residual, tasks: !!t });
  const uniforms = new Uniforms()
    .u32(a.M)
    .u32(a.N)
    .u32(a.K)
    .u32(ldx)
    .u32(ldy)
    .u32(ldr)
    .u32(t?.siteBase ?? 0)
    .u32(t?.deltaRow0 ?? 0)
    .u32(t?.deltaLd ?? 0)
    .u32(Math.max(1, t?.deltaBlock ?? 1));
  const groups: [number, number] =
    variant === 'naive'
      ? [Math.ceil(a.N / 8), Math.ceil(a.M / 8)]
      : variant === 'rb'
        ? [Math.ceil(a.N / (8 * tuning.gemmColsPerInvocation)), Math.ceil(a.M / (8 * tuning.gemmRowsPerInvocation))]
        : [Math.ceil(a.N / 64), Math.ceil(a.M / 64)];
  const bindings = [a.x, a.w, a.y, a.bias ?? null, a.residual ?? null];
  if (t) bindings.push(t.rowSlot, t.slotTable, t.pool, t.delta);
  enc.dispatch(label, spec, uniforms, bindings, groups);
}
