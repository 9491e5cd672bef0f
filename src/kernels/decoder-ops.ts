import type { BatchEncoder } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import { rowGrid } from './row-ops.js';
import { defaultKernelChoices } from './tuning.js';
import type { Dtype } from './types.js';

/** Invocations per workgroup of the elementwise decoder kernels (fixed in their shaders). */
const ELEMENTWISE_WG = 64;

/** Workgroups for one invocation per (column, row): columns in x, rows over (y, z) past 65535. */
function columnRowGrid(columns: number, rows: number): [number, number, number] {
  const [y, z] = rowGrid(rows);
  return [Math.ceil(columns / ELEMENTWISE_WG), y, z];
}

export interface RmsNormArgs {
  x: GPUBuffer;
  gamma: GPUBuffer;
  y: GPUBuffer;
  rows: number;
  dim: number;
  eps: number;
}

/** y = x / sqrt(mean(x²) + eps) · gamma per row (LlamaRMSNorm: statistics in f32). */
export function rmsNorm(
  enc: BatchEncoder,
  dtype: Dtype,
  a: RmsNormArgs,
  label = 'rms_norm',
  workgroupSize = defaultKernelChoices.rowWorkgroupSize,
): void {
  const spec = { shader: 'rms_norm', params: { DTYPE: dtype, WG: workgroupSize } };
  const uniforms = new Uniforms().u32(a.rows).u32(a.dim).f32(a.eps);
  enc.dispatch(label, spec, uniforms, [a.x, a.gamma, a.y], rowGrid(a.rows));
}

export interface RotaryEmbeddingArgs {
  /** Fused [tokens, ldQkv] projection; q block at column 0, k block right after it. Updated in place. */
  qkv: GPUBuffer;
  ldQkv: number;
  /** u32 [tokens]: position of each row in its sequence. */
  positions: GPUBuffer;
  /** f32 [rotaryDims / 2], whatever the dtype: the host computes it, rope_scaling included. */
  invFreq: GPUBuffer;
  tokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Leading dims of each head that rotate (even, ≤ headDim); the rest pass through. */
  rotaryDims: number;
}

/** Rotary embedding (HF rotate_half convention) in place on the q and k heads of each qkv row. */
export function rotaryEmbedding(enc: BatchEncoder, dtype: Dtype, a: RotaryEmbeddingArgs, label = 'rope'): void {
  if (a.rotaryDims % 2 !== 0 || a.rotaryDims > a.headDim) {
    throw new RangeError(`${label}: rotaryDims ${a.rotaryDims} must be even and at most headDim ${a.headDim}`);
  }
  const heads = a.numHeads + a.numKvHeads;
  if (a.ldQkv < heads * a.headDim) throw new RangeError(`${label}: ldQkv ${a.ldQkv} is narrower than the q and k blocks`);
  const half = a.rotaryDims / 2;
  const spec = { shader: 'rope', params: { DTYPE: dtype } };
  const uniforms = new Uniforms().u32(a.tokens).u32(heads).u32(a.headDim).u32(half).u32(a.ldQkv);
  enc.dispatch(label, spec, uniforms, [a.qkv, a.positions, a.invFreq], columnRowGrid(heads * half, a.tokens));
}

export interface SiluMulArgs {
  /** [rows, 2·width]: gate | up, as one fused gate_up GEMM writes it. */
  x: GPUBuffer;
  /** [rows, width]. */
  y: GPUBuffer;
  rows: number;
  width: number;
}

/** SwiGLU: y = silu(gate) · up. */
export function siluMul(enc: BatchEncoder, dtype: Dtype, a: SiluMulArgs, label = 'silu_mul'): void {
  const spec = { shader: 'silu_mul', params: { DTYPE: dtype } };
  enc.dispatch(label, spec, new Uniforms().u32(a.rows).u32(a.width), [a.x, a.y], columnRowGrid(a.width, a.rows));
}
