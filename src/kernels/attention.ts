import type { BatchEncoder } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import type { SlotLookup } from './row-ops.js';
import { tuning } from './tuning.js';
import type { Dtype } from './types.js';

export interface AttentionArgs {
  /** [tokens, ldQkv] with q | k | v blocks of `hidden` columns each. */
  qkv: GPUBuffer;
  /** u32 [tokens, 2]: first key row and key count of each token's sequence. */
  keyRange: GPUBuffer;
  out: GPUBuffer;
  tokens: number;
  heads: number;
  headDim: number;
  /** Upper bound on any sequence's key count (sizes workgroup memory). */
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

export function attention(enc: BatchEncoder, dtype: Dtype, a: AttentionArgs, label = 'attention'): void {
  const hidden = a.heads * a.headDim;
  const spec = {
    shader: 'attention',
    params: {
      DTYPE: dtype,
      WG: tuning.attentionWorkgroupSize,
      MAX_KEYS: roundKeys(a.maxKeys),
      MAX_HEAD_DIM: roundKeys(a.headDim),
      TASKS: !!a.tasks,
    },
  };
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
