import type { BatchEncoder } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import { rowGrid } from './row-ops.js';
import { defaultKernelChoices } from './tuning.js';
import type { Dtype } from './types.js';

// A layer's KV cache is two buffers, kCache and vCache, each [slots, kvWidth]
// (kvWidth = numKvHeads·headDim), slot = block·blockTokens + offset: vLLM's
// paged layout, token-major inside a block, so a token's k is one contiguous row.

/** slotMapping entry of a row whose k/v must not be written. */
export const NO_SLOT = 0xffffffff;

/** Invocations per workgroup of kv_write (fixed in the shader). */
const KV_WRITE_WG = 64;

export interface KvWriteArgs {
  qkv: GPUBuffer;
  ldQkv: number;
  /** First column of the k block and of the v block inside a qkv row. */
  kCol: number;
  vCol: number;
  /** u32 [tokens]: cache slot of each row, NO_SLOT to skip it. */
  slotMapping: GPUBuffer;
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  tokens: number;
  kvWidth: number;
}

/** Copy each row's k and v into its cache slot. */
export function kvWrite(enc: BatchEncoder, dtype: Dtype, a: KvWriteArgs, label = 'kv_write'): void {
  if (Math.max(a.kCol, a.vCol) + a.kvWidth > a.ldQkv) {
    throw new RangeError(`${label}: k/v block [${a.kCol}|${a.vCol}, +${a.kvWidth}) runs past ldQkv ${a.ldQkv}`);
  }
  const spec = { shader: 'kv_write', params: { DTYPE: dtype } };
  const uniforms = new Uniforms().u32(a.tokens).u32(a.kvWidth).u32(a.ldQkv).u32(a.kCol).u32(a.vCol);
  const [y, z] = rowGrid(a.tokens);
  enc.dispatch(label, spec, uniforms, [a.qkv, a.slotMapping, a.kCache, a.vCache], [
    Math.ceil(a.kvWidth / KV_WRITE_WG),
    y,
    z,
  ]);
}

export interface PagedAttentionArgs {
  /** q is read from columns [0, numHeads·headDim) of each row. */
  qkv: GPUBuffer;
  ldQkv: number;
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  /** u32 [tokens, 2]: (sequence index into blockTables, visible key count). */
  rowInfo: GPUBuffer;
  /** u32 [sequences, maxBlocksPerSeq]: physical block of each logical block. */
  blockTables: GPUBuffer;
  maxBlocksPerSeq: number;
  blockTokens: number;
  /** [tokens, numHeads·headDim]. */
  out: GPUBuffer;
  tokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Score scale, usually 1/√headDim. */
  scale: number;
  /** f32 [numHeads] whatever the dtype: ALiBi slopes (BLOOM); null for none. */
  alibiSlopes?: GPUBuffer | null;
}

/**
 * Attention of each row's q against the first `visible` keys of its sequence
 * in the paged cache; grouped-query when numKvHeads < numHeads. Context length
 * is unbounded (online softmax over key chunks).
 */
export function pagedAttention(
  enc: BatchEncoder,
  dtype: Dtype,
  a: PagedAttentionArgs,
  label = 'paged_attention',
  workgroupSize = defaultKernelChoices.attention.workgroupSize,
): void {
  if (a.numKvHeads <= 0 || a.numHeads % a.numKvHeads !== 0) {
    throw new RangeError(`${label}: numHeads ${a.numHeads} is not a multiple of numKvHeads ${a.numKvHeads}`);
  }
  if (a.ldQkv < a.numHeads * a.headDim) throw new RangeError(`${label}: ldQkv ${a.ldQkv} is narrower than the q block`);
  const wg = workgroupSize;
  const spec = {
    shader: 'paged_attention',
    // Output dims per invocation: 1 up to headDim = WG, 2 up to 2·WG, ...
    params: { DTYPE: dtype, WG: wg, DPI: Math.max(1, Math.ceil(a.headDim / wg)), ALIBI: !!a.alibiSlopes },
  };
  const uniforms = new Uniforms()
    .u32(a.tokens)
    .u32(a.numHeads)
    .u32(a.headDim)
    .u32(a.numKvHeads * a.headDim)
    .u32(a.numHeads / a.numKvHeads)
    .u32(a.ldQkv)
    .u32(a.maxBlocksPerSeq)
    .u32(a.blockTokens)
    .f32(a.scale);
  const [x, z] = rowGrid(a.tokens);
  const bindings = [a.qkv, a.kCache, a.vCache, a.rowInfo, a.blockTables, a.out, a.alibiSlopes ?? null];
  enc.dispatch(label, spec, uniforms, bindings, [x, a.numHeads, z]);
}
