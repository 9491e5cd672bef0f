import type { BatchEncoder } from '../gpu/batch-encoder.js';
import type { ActivationArena } from '../gpu/buffers.js';
import { attention } from '../kernels/attention.js';
import { embeddingSum } from '../kernels/embedding.js';
import { gemm, type GemmVariant } from '../kernels/gemm.js';
import { gatherRows, layerNorm } from '../kernels/row-ops.js';
import { bytesPerElement } from '../kernels/types.js';
import type { BertConfig } from './bert-config.js';
import type { GpuBertWeights } from './gpu-weights.js';

/** Shape of one packed batch: `tokens` rows of `sequences` ragged sequences laid end to end. */
export interface PackedShape {
  tokens: number;
  sequences: number;
  /** Longest sequence (bounds attention's key count). */
  maxLength: number;
}

/** Activation buffers of one batch, taken from the arena (reused across batches). */
export interface BatchBuffers {
  tokenTable: GPUBuffer; // u32 [tokens, 3]
  keyRange: GPUBuffer; // u32 [tokens, 2]
  clsRows: GPUBuffer; // u32 [sequences]
  hidden: GPUBuffer; // [tokens, H]  layer input / output
  hiddenMid: GPUBuffer; // [tokens, H]  after attention block
  scratch: GPUBuffer; // [tokens, H]  pre-LayerNorm sums
  qkv: GPUBuffer; // [tokens, 3H]
  context: GPUBuffer; // [tokens, H]
  intermediate: GPUBuffer; // [tokens, I]
  cls: GPUBuffer; // [sequences, H]
  pooled: GPUBuffer; // [sequences, H]
  logits: GPUBuffer; // [sequences, labels]
}

export function batchBuffers(arena: ActivationArena, cfg: BertConfig, dtype: GpuBertWeights['dtype'], s: PackedShape, numLabels: number): BatchBuffers {
  const e = bytesPerElement(dtype);
  const H = cfg.hiddenSize;
  return {
    tokenTable: arena.get('tokenTable', s.tokens * 12),
    keyRange: arena.get('keyRange', s.tokens * 8),
    clsRows: arena.get('clsRows', s.sequences * 4),
    hidden: arena.get('hidden', s.tokens * H * e),
    hiddenMid: arena.get('hiddenMid', s.tokens * H * e),
    scratch: arena.get('scratch', s.tokens * H * e),
    qkv: arena.get('qkv', s.tokens * 3 * H * e),
    context: arena.get('context', s.tokens * H * e),
    intermediate: arena.get('intermediate', s.tokens * cfg.intermediateSize * e),
    cls: arena.get('cls', s.sequences * H * e),
    pooled: arena.get('pooled', s.sequences * H * e),
    logits: arena.get('logits', Math.max(1, s.sequences * numLabels) * e),
  };
}

/**
 * Records the whole BERT forward pass of one packed batch into `enc`:
 * embeddings → N × (fused QKV GEMM, packed attention, output GEMM + residual,
 * LayerNorm, GELU GEMM, output GEMM + residual, LayerNorm) → pooler on each
 * sequence's first token → classifier. Shared ops run once over all tokens.
 * After it, `hidden` holds last_hidden_state, `pooled` and `logits` the heads.
 */
export function recordBertForward(
  enc: BatchEncoder,
  cfg: BertConfig,
  w: GpuBertWeights,
  b: BatchBuffers,
  s: PackedShape,
  gemmVariant: GemmVariant,
): void {
  const dt = w.dtype;
  const T = s.tokens;
  const H = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  const heads = cfg.numAttentionHeads;
  const eps = cfg.layerNormEps;

  enc.phase('embeddings');
  embeddingSum(enc, dt, {
    tokenTable: b.tokenTable,
    word: w.wordEmbeddings,
    position: w.positionEmbeddings,
    tokenType: w.tokenTypeEmbeddings,
    y: b.scratch,
    tokens: T,
    hidden: H,
  });
  layerNorm(enc, dt, { x: b.scratch, ...w.embeddingLayerNorm, y: b.hidden, rows: T, dim: H, eps }, 'embeddings.ln');

  w.layers.forEach((l, i) => {
    enc.phase(`layer${i}`);
    gemm(enc, dt, { x: b.hidden, w: l.qkv.weight, bias: l.qkv.bias, y: b.qkv, M: T, N: 3 * H, K: H }, `l${i}.qkv`, gemmVariant);
    attention(enc, dt, { qkv: b.qkv, keyRange: b.keyRange, out: b.context, tokens: T, heads, headDim: H / heads, maxKeys: s.maxLength }, `l${i}.attention`);
    gemm(enc, dt, { x: b.context, w: l.attentionOutput.weight, bias: l.attentionOutput.bias, residual: b.hidden, y: b.scratch, M: T, N: H, K: H }, `l${i}.attn_out`, gemmVariant);
    layerNorm(enc, dt, { x: b.scratch, ...l.attentionLayerNorm, y: b.hiddenMid, rows: T, dim: H, eps }, `l${i}.attn_ln`);
    gemm(enc, dt, { x: b.hiddenMid, w: l.intermediate.weight, bias: l.intermediate.bias, y: b.intermediate, M: T, N: I, K: H, act: 'gelu' }, `l${i}.intermediate`, gemmVariant);
    gemm(enc, dt, { x: b.intermediate, w: l.output.weight, bias: l.output.bias, residual: b.hiddenMid, y: b.scratch, M: T, N: H, K: I }, `l${i}.output`, gemmVariant);
    layerNorm(enc, dt, { x: b.scratch, ...l.outputLayerNorm, y: b.hidden, rows: T, dim: H, eps }, `l${i}.out_ln`);
  });

  enc.phase('heads');
  const B = s.sequences;
  gatherRows(enc, dt, { rows: b.clsRows, x: b.hidden, y: b.cls, count: B, dim: H }, 'cls_rows');
  gemm(enc, dt, { x: b.cls, w: w.pooler.weight, bias: w.pooler.bias, y: b.pooled, M: B, N: H, K: H, act: 'tanh' }, 'pooler', gemmVariant);
  if (w.classifier) {
    const c = w.classifier;
    gemm(enc, dt, { x: b.pooled, w: c.weight, bias: c.bias, y: b.logits, M: B, N: c.outDim, K: H }, 'classifier', gemmVariant);
  }
}
