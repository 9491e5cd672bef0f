import type { BatchEncoder } from '../gpu/batch-encoder.js';
import type { KernelSpec } from '../gpu/pipeline-cache.js';
import { Uniforms } from '../gpu/uniforms.js';
import { defaultKernelChoices, tuning } from './tuning.js';
import type { Dtype, GemmChoice, KernelChoices } from './types.js';

export type { GemmChoice, GemmVariant } from './types.js';

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
  choice: GemmChoice,
  opts: {
    hasBias: boolean;
    act: GemmActivation;
    residual: boolean;
    tasks?: boolean;
    /** K and ldx are multiples of 4, so 'subgroup' may read X and W as vec4 (default true). */
    vec4Loads?: boolean;
  },
): KernelSpec {
  const common = { DTYPE: dtype, HAS_BIAS: opts.hasBias, ACT: opts.act, RESIDUAL: opts.residual, TASKS: opts.tasks ?? false };
  switch (choice.variant) {
    case 'naive':
      return { shader: 'gemm_naive', params: common };
    case 'rb':
      return { shader: 'gemm_rb', params: { ...common, RM: choice.rowsPerInvocation, CN: choice.colsPerInvocation } };
    case 'sgx':
      return { shader: 'gemm_sgx', params: { ...common, RM: choice.rowsPerInvocation, CN: choice.colsPerInvocation } };
    case 'tiled':
      return { shader: 'gemm', params: { ...common, BK: choice.bk } };
    case 'subgroup':
      return { shader: 'gemm_sg', params: { ...common, RPW: choice.rowsPerWorkgroup, VEC: opts.vec4Loads === false ? 1 : 4 } };
  }
}

/** Workgroup grid of a GEMM of M x N outputs for `choice`. */
function gemmGrid(choice: GemmChoice, M: number, N: number): [number, number] {
  switch (choice.variant) {
    case 'naive':
      return [Math.ceil(N / 8), Math.ceil(M / 8)];
    case 'rb':
      return [Math.ceil(N / (8 * choice.colsPerInvocation)), Math.ceil(M / (8 * choice.rowsPerInvocation))];
    case 'sgx':
      // 64 invocations of one row block per workgroup (shaders/gemm_sgx.wgsl).
      return [Math.ceil(N / (64 * choice.colsPerInvocation)), Math.ceil(M / choice.rowsPerInvocation)];
    case 'tiled':
      return [Math.ceil(N / 64), Math.ceil(M / 64)];
    case 'subgroup':
      // One 64-invocation workgroup per 4 columns of rowsPerWorkgroup rows (shaders/gemm_sg.wgsl).
      return [Math.ceil(N / 4), Math.ceil(M / choice.rowsPerWorkgroup)];
  }
}

/** The GEMM choice for a GEMM of M rows: few rows (decode steps) take `smallGemm`. */
export function gemmChoiceFor(choices: KernelChoices, M: number): GemmChoice {
  return M <= tuning.smallGemmMaxRows ? choices.smallGemm : choices.gemm;
}

/** The fallback when `choice` cannot run this shape ('rb' needs K and ldx to be multiples of 4). */
const TILED_FALLBACK: GemmChoice = { variant: 'tiled', bk: 16 };

/**
 * The fallback for 'subgroup' on a device without the `subgroups` feature (a choice cached or configured
 * on another adapter): the few-rows rb shape.
 */
const NO_SUBGROUPS_FALLBACK: GemmChoice = { variant: 'rb', rowsPerInvocation: 1, colsPerInvocation: 8 };

/** The fallback for 'sgx' without the `subgroups` feature: the rb shape that was the default before sgx. */
const NO_SUBGROUPS_MANY_ROWS_FALLBACK: GemmChoice = { variant: 'rb', rowsPerInvocation: 4, colsPerInvocation: 8 };

/** Record Y = act(X·Wᵀ + b) (+ R) into `enc`. */
export function gemm(
  enc: BatchEncoder,
  dtype: Dtype,
  a: GemmArgs,
  label = 'gemm',
  choice: GemmChoice = defaultKernelChoices.gemm,
): void {
  const ldx = a.ldx ?? a.K;
  const ldy = a.ldy ?? a.N;
  const ldr = a.ldr ?? ldy;
  if (ldx < a.K || ldy < a.N) throw new RangeError(`${label}: row stride smaller than the row`);
  const vec4Loads = a.K % 4 === 0 && ldx % 4 === 0;
  if (choice.variant === 'subgroup' && !enc.capabilities.subgroups) choice = NO_SUBGROUPS_FALLBACK;
  if (choice.variant === 'sgx' && !enc.capabilities.subgroups) choice = NO_SUBGROUPS_MANY_ROWS_FALLBACK;
  if ((choice.variant === 'rb' || choice.variant === 'sgx') && !vec4Loads) choice = TILED_FALLBACK;
  const t = a.tasks ?? null;
  const spec = gemmSpec(dtype, choice, { hasBias: !!a.bias, act: a.act ?? 'none', residual: !!a.residual, tasks: !!t, vec4Loads });
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
  const bindings = [a.x, a.w, a.y, a.bias ?? null, a.residual ?? null];
  if (t) bindings.push(t.rowSlot, t.slotTable, t.pool, t.delta);
  enc.dispatch(label, spec, uniforms, bindings, gemmGrid(choice, a.M, a.N));
}
