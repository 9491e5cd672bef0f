import type { BatchEncoder } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import type { SlotLookup } from './row-ops.js';
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
 * Packed multi-head self-attention. `choice.form` picks the kernel: 'resident' (attention.wgsl) or 'online'
 * (attention_online.wgsl); both bind and dispatch the same, one workgroup per (token, head).
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
  // The resident form's workgroup memory grows with maxKeys; past the device limit its pipeline would not
  // even compile, while the online form's memory is fixed, so long sequences run online whatever was chosen.
  const residentFits =
    residentWorkgroupBytes(a.maxKeys, a.headDim, wg) <= enc.capabilities.maxComputeWorkgroupStorageSize;
  const form = choice.form === 'resident' && !residentFits ? 'online' : choice.form;
  const hidden = a.heads * a.headDim;
  const common = { DTYPE: dtype, WG: wg, MAX_HEAD_DIM: roundKeys(a.headDim), TASKS: !!a.tasks };
  const spec =
    form === 'resident'
      ? { shader: 'attention', params: { ...common, MAX_KEYS: roundKeys(a.maxKeys) } }
      : { shader: 'attention_online', params: common };
  const uniforms = new Uniforms()
    .u32(a.tokens)
    .u32(a.heads)
    .u32(a.headDim)
    .u32(hidden)
    .u32(a.ldQkv ?? 3 * hidden)
    .f32(1 / Math.sqrt(a.headDim))
    .u32(a.tasks?.siteBase ?? 0);
  const x = Math.min(a.tokens, 65535);
  const z = Math.ceil(a.tokens / 65535);
  const bindings = [a.qkv, a.keyRange, a.out];
  if (a.tasks) bindings.push(a.tasks.rowSlot, a.tasks.slotTable, a.tasks.pool);
  enc.dispatch(label, spec, uniforms, bindings, [x, a.heads, z]);
}
