import type { BatchEncoder } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import type { SlotLookup } from './row-ops.js';
import { LANES_WORKGROUP } from './candidates.js';
import { defaultKernelChoices } from './tuning.js';
import type { AttentionChoice, Dtype } from './types.js';

export interface AttentionArgs {
  /** [tokens, ldQkv] with q | k | v blocks of `hidden` columns each. */
  qkv: GPUBuffer;
  /** u32 [tokens, 2]: first key row and key count of each token's sequence. */
  keyRange: GPUBuffer;
  out: GPUBuffer;
  tokens: number;
  heads: number;
  headDim: number;
  /** Upper bound on any sequence's key count (sizes the resident form's workgroup memory). */
  maxKeys: number;
  ldQkv?: number;
  /** Per-task context scaling (IA³ on attention.output.dense's input). */
  tasks?: SlotLookup | null;
}

/** Build the per-token key ranges for sequences packed end to end. */
export function packedKeyRanges(seqLengths: readonly number[]): Uint32Array {
  const total = seqLengths.reduce((a, b) => a + b, 0);
  const table = new Uint32Array(total * 2);
  let start = 0;
  let t = 0;
  for (const len of seqLengths) {
    for (let i = 0; i < len; i++, t++) {
      table[2 * t] = start;
      table[2 * t + 1] = len;
    }
    start += len;
  }
  return table;
}

// Workgroup memory is specialised in steps so few pipelines are compiled.
const roundKeys = (n: number): number => Math.max(64, 2 ** Math.ceil(Math.log2(n)));

/** Workgroup memory of the resident form (attention.wgsl): every score of a query, the scaled query, the reduction. */
export function residentWorkgroupBytes(maxKeys: number, headDim: number, workgroupSize: number): number {
  return 4 * (roundKeys(maxKeys) + roundKeys(headDim) + workgroupSize);
}

/**
 * Packed multi-head self-attention. `choice.form` picks the kernel: 'resident' (attention.wgsl), 'online'
 * (attention_online.wgsl), both one workgroup per (token, head), or 'lanes' (attention_lanes.wgsl), one
 * invocation per (token, head). All bind the same buffers.
 */
export function attention(
  enc: BatchEncoder,
  dtype: Dtype,
  a: AttentionArgs,
  label = 'attention',
  choice: AttentionChoice = defaultKernelChoices.attention,
): void {
  const wg = choice.workgroupSize;
  // Both forms reduce over the workgroup in halves (resident) or eighths (online).
  if (!Number.isInteger(wg) || wg < 1 || (wg & (wg - 1)) !== 0) {
    throw new RangeError(`${label}: attention workgroup size ${wg} is not a power of two`);
  }
  const hidden = a.heads * a.headDim;
  const ldQkv = a.ldQkv ?? 3 * hidden;
  // 'lanes' reads vec4 chunks of a head and specialises on the adapter's one subgroup size; elsewhere the resident form.
  const subgroupSize = enc.capabilities.subgroups ? enc.capabilities.subgroupSize : null;
  const lanesFit = subgroupSize !== null && a.headDim % 4 === 0 && ldQkv % 4 === 0;
  let form = choice.form === 'lanes' && !lanesFit ? 'resident' : choice.form;
  const residentWg = choice.form === 'lanes' ? LANES_WORKGROUP : wg;
  // The resident form's workgroup memory grows with maxKeys; past the device limit its pipeline would not
  // even compile, while the online form's memory is fixed, so long sequences run online whatever was chosen.
  const residentFits =
    residentWorkgroupBytes(a.maxKeys, a.headDim, residentWg) <= enc.capabilities.maxComputeWorkgroupStorageSize;
  if (form === 'resident' && !residentFits) form = 'online';
  const common = { DTYPE: dtype, TASKS: !!a.tasks };
  const spec =
    form === 'lanes'
      ? { shader: 'attention_lanes', params: { ...common, HEAD_DIM: a.headDim, SG: subgroupSize! } }
      : form === 'resident'
        ? { shader: 'attention', params: { ...common, WG: residentWg, MAX_HEAD_DIM: roundKeys(a.headDim), MAX_KEYS: roundKeys(a.maxKeys) } }
        : { shader: 'attention_online', params: { ...common, WG: residentWg, MAX_HEAD_DIM: roundKeys(a.headDim) } };
  const uniforms = new Uniforms()
    .u32(a.tokens)
    .u32(a.heads)
    .u32(a.headDim)
    .u32(hidden)
    .u32(ldQkv)
    .f32(1 / Math.sqrt(a.headDim))
    .u32(a.tasks?.siteBase ?? 0);
  // One workgroup per (token, head), or per (LANES_WORKGROUP tokens, head) in the lanes form; x past 65535 spills into z.
  const blocks = form === 'lanes' ? Math.ceil(a.tokens / LANES_WORKGROUP) : a.tokens;
  const x = Math.min(blocks, 65535);
  const z = Math.ceil(blocks / 65535);
  const bindings = [a.qkv, a.keyRange, a.out];
  if (a.tasks) bindings.push(a.tasks.rowSlot, a.tasks.slotTable, a.tasks.pool);
  enc.dispatch(label, spec, uniforms, bindings, [x, a.heads, z]);
}
