import type { BatchEncoder } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import { defaultKernelChoices } from './tuning.js';
import type { Dtype } from './types.js';

/** Row index split over (x, y) so more than 65535 rows can be dispatched. */
export function rowGrid(rows: number): [number, number] {
  return rows <= 65535 ? [rows, 1] : [65535, Math.ceil(rows / 65535)];
}

export interface LayerNormArgs {
  x: GPUBuffer;
  gamma: GPUBuffer;
  beta: GPUBuffer;
  y: GPUBuffer;
  /** Fused residual: y = LN(x + residual). */
  residual?: GPUBuffer | null;
  rows: number;
  dim: number;
  eps: number;
  /** Per-task gamma/beta (BitFit) through per-row slots. */
  tasks?: SlotLookup | null;
}

/** Per-row task lookup shared by kernels with per-task parameters. */
export interface SlotLookup {
  /** u32 [rows]: slot of each row. */
  rowSlot: GPUBuffer;
  /** The slot table (slot-record.ts): per (site, slot) offsets into `pool`, NONE = keep the base value. */
  slotTable: GPUBuffer;
  /** Element offset of this site's first record. */
  siteBase: number;
  pool: GPUBuffer;
}

export function layerNorm(
  enc: BatchEncoder,
  dtype: Dtype,
  a: LayerNormArgs,
  label = 'layernorm',
  workgroupSize = defaultKernelChoices.rowWorkgroupSize,
): void {
  const spec = {
    shader: 'layernorm',
    params: { DTYPE: dtype, WG: workgroupSize, RESIDUAL: !!a.residual, TASKS: !!a.tasks },
  };
  const uniforms = new Uniforms().u32(a.rows).u32(a.dim).f32(a.eps).u32(a.tasks?.siteBase ?? 0);
  const bindings = [a.x, a.gamma, a.beta, a.y, a.residual ?? null];
  if (a.tasks) bindings.push(a.tasks.rowSlot, a.tasks.slotTable, a.tasks.pool);
  enc.dispatch(label, spec, uniforms, bindings, rowGrid(a.rows));
}

/** Row softmax; output is always f32 (probabilities go straight to the caller). */
export function softmaxRows(
  enc: BatchEncoder,
  dtype: Dtype,
  a: { x: GPUBuffer; y: GPUBuffer; rows: number; cols: number },
  label = 'softmax',
  workgroupSize = defaultKernelChoices.rowWorkgroupSize,
): void {
  const spec = { shader: 'softmax', params: { DTYPE: dtype, WG: workgroupSize } };
  enc.dispatch(label, spec, new Uniforms().u32(a.rows).u32(a.cols), [a.x, a.y], rowGrid(a.rows));
}

/** y[r] = x[rows[r]] for `count` rows of width `dim`. */
export function gatherRows(
  enc: BatchEncoder,
  dtype: Dtype,
  a: { rows: GPUBuffer; x: GPUBuffer; y: GPUBuffer; count: number; dim: number },
  label = 'gather_rows',
): void {
  const spec = { shader: 'gather_rows', params: { DTYPE: dtype } };
  enc.dispatch(label, spec, new Uniforms().u32(a.count).u32(a.dim), [a.rows, a.x, a.y], [
    Math.ceil(a.dim / 64),
    a.count,
  ]);
}
