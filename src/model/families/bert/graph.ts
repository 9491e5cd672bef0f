import type { BatchEncoder } from '../../../gpu/batch-encoder.js';
import type { ActivationArena } from '../../../gpu/buffers.js';
import { attention } from '../../../kernels/attention.js';
import { embeddingSum } from '../../../kernels/embedding.js';
import { gemm, type GemmArgs, type GemmVariant } from '../../../kernels/gemm.js';
import { gatherRows, layerNorm, type SlotLookup } from '../../../kernels/row-ops.js';
import { segGemm, segSparse, type SegmentTables } from '../../../kernels/segmented.js';
import { slotSiteBase } from '../../../kernels/slot-record.js';
import { bytesPerElement } from '../../../kernels/types.js';
import { siteKey, type PetGraphInput } from '../../pet-graph-input.js';
import type { GraphBuffers, PackedShape } from '../types.js';
import type { BertConfig } from './config.js';
import type { GpuBertWeights } from './gpu-weights.js';
import { bertSites, type BertGemm, type BertSlotSite } from './sites.js';

/** Activation buffers of one batch, taken from the arena (reused across batches). */
export interface BatchBuffers extends GraphBuffers {
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

export function batchBuffers(
  arena: ActivationArena,
  cfg: BertConfig,
  dtype: GpuBertWeights['dtype'],
  s: PackedShape,
  logitsElems: number,
): BatchBuffers {
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
    logits: arena.get('logits', Math.max(1, logitsElems) * e),
  };
}

/**
 * Records the whole BERT forward pass of one packed batch into `enc`:
 * embeddings → N × (fused QKV GEMM, packed attention, output GEMM + residual,
 * LayerNorm, GELU GEMM, output GEMM + residual, LayerNorm) → pooler on each
 * sequence's first token → classifier. Shared ops run once over all tokens.
 * After it, `hidden` holds last_hidden_state, `pooled` and `logits` the heads.
 *
 * With `pet`, every shared op also applies the rows' task parameters: element-wise
 * PETs through epilogue slot lookups, X-derived deltas (LoRA, diff, mask) written
 * by segmented dispatches into a delta buffer that the site's GEMM epilogue adds
 * for the column blocks flagged in the row's slot,
 * adapters by segmented dispatches on the GEMM output before residual + LayerNorm,
 * and per-task heads by one segmented GEMM.
 */
export function recordBertForward(
  enc: BatchEncoder,
  cfg: BertConfig,
  w: GpuBertWeights,
  b: BatchBuffers,
  s: PackedShape,
  gemmVariant: GemmVariant,
  pet: PetGraphInput | null = null,
): void {
  const dt = w.dtype;
  const T = s.tokens;
  const H = cfg.hiddenSize;
  const heads = cfg.numAttentionHeads;
  const eps = cfg.layerNormEps;
  const active = pet?.operators?.activeSlotSites ?? null;
  const slots = (rowSlot: GPUBuffer, layer: number, site: BertSlotSite): SlotLookup | null => {
    if (!pet) return null;
    const index = bertSites.slotSiteIndex(cfg, layer, site);
    // No row of this batch has work here: the plain kernel, without per-row slot lookups.
    if (active && active[index] === 0) return null;
    return { rowSlot, slotTable: pet.slotTable, pool: pet.pool, siteBase: slotSiteBase(index, pet.numSlots) };
  };
  const interleave = pet?.operators?.interleaveSparse === true;
  const tables = (t: SegmentTables, inp: GPUBuffer, out: GPUBuffer) => ({ ...pet!.ranges(t), inp, out, pool: pet!.pool });
  const perTask = pet?.perTaskDispatch === true;

  /**
   * One linear site: PET deltas of X into `delta`, the shared GEMM with the task
   * epilogue, then adapters on its output. Returns whether adapters ran (then the
   * residual was NOT fused and the LayerNorm must add it).
   */
  const linear = (layer: number, site: BertGemm, args: Omit<GemmArgs, 'M' | 'N' | 'K'>, label: string): boolean => {
    const shape = bertSites.gemmShape(cfg, site);
    const a: GemmArgs = { ...args, M: T, N: shape.N, K: shape.K };
    const work = pet?.sites.get(siteKey(layer, site));
    const adapters = !!work?.adapterDown;
    if (pet && work && (work.shrink || work.sparse)) {
      const sparse = (): void => {
        if (work.sparse) segSparse(enc, dt, work.sparse, { ...tables(work.sparse, a.x, pet.delta), weight: a.w }, `${label}.sparse`, perTask);
      };
      if (work.shrink && work.expand) {
        segGemm(enc, dt, work.shrink, tables(work.shrink, a.x, pet.scratch), false, `${label}.lora_shrink`, perTask);
        if (interleave) sparse();
        segGemm(enc, dt, work.expand, tables(work.expand, pet.scratch, pet.delta), false, `${label}.lora_expand`, perTask);
        if (!interleave) sparse();
      } else sparse();
    }
    const lookup = slots(pet?.tokenSlot as GPUBuffer, layer, site);
    gemm(
      enc,
      dt,
      {
        ...a,
        residual: adapters ? null : a.residual,
        tasks:
          lookup && pet
            ? { ...lookup, delta: pet.delta, deltaRow0: pet.deltaRow0, deltaLd: a.N, deltaBlock: shape.deltaBlock }
            : null,
      },
      label,
      gemmVariant,
    );
    if (pet && work?.adapterDown && work.adapterUp) {
      segGemm(enc, dt, work.adapterDown, tables(work.adapterDown, a.y, pet.scratch), false, `${label}.adapter_down`, perTask);
      segGemm(enc, dt, work.adapterUp, tables(work.adapterUp, pet.scratch, a.y), true, `${label}.adapter_up`, perTask);
    }
    return adapters;
  };

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
  layerNorm(
    enc,
    dt,
    { x: b.scratch, ...w.embeddingLayerNorm, y: b.hidden, rows: T, dim: H, eps, tasks: slots(pet?.tokenSlot as GPUBuffer, 0, 'embeddings') },
    'embeddings.ln',
  );

  w.layers.forEach((l, i) => {
    enc.phase(`layer${i}`);
    const tok = pet?.tokenSlot as GPUBuffer;
    linear(i, 'qkv', { x: b.hidden, w: l.qkv.weight, bias: l.qkv.bias, y: b.qkv }, `l${i}.qkv`);
    attention(
      enc,
      dt,
      { qkv: b.qkv, keyRange: b.keyRange, out: b.context, tokens: T, heads, headDim: H / heads, maxKeys: s.maxLength, tasks: slots(tok, i, 'context') },
      `l${i}.attention`,
    );
    const attnAdapters = linear(
      i,
      'attention_output',
      { x: b.context, w: l.attentionOutput.weight, bias: l.attentionOutput.bias, residual: b.hidden, y: b.scratch },
      `l${i}.attn_out`,
    );
    layerNorm(
      enc,
      dt,
      { x: b.scratch, ...l.attentionLayerNorm, residual: attnAdapters ? b.hidden : null, y: b.hiddenMid, rows: T, dim: H, eps, tasks: slots(tok, i, 'attention_layernorm') },
      `l${i}.attn_ln`,
    );
    linear(
      i,
      'intermediate',
      { x: b.hiddenMid, w: l.intermediate.weight, bias: l.intermediate.bias, y: b.intermediate, act: 'gelu' },
      `l${i}.intermediate`,
    );
    const outAdapters = linear(
      i,
      'output',
      { x: b.intermediate, w: l.output.weight, bias: l.output.bias, residual: b.hiddenMid, y: b.scratch },
      `l${i}.output`,
    );
    layerNorm(
      enc,
      dt,
      { x: b.scratch, ...l.outputLayerNorm, residual: outAdapters ? b.hiddenMid : null, y: b.hidden, rows: T, dim: H, eps, tasks: slots(tok, i, 'output_layernorm') },
      `l${i}.out_ln`,
    );
  });

  enc.phase('heads');
  const B = s.sequences;
  gatherRows(enc, dt, { rows: b.clsRows, x: b.hidden, y: b.cls, count: B, dim: H }, 'cls_rows');
  const poolerSlots = slots(pet?.seqSlot as GPUBuffer, 0, 'pooler');
  gemm(
    enc,
    dt,
    {
      x: b.cls, w: w.pooler.weight, bias: w.pooler.bias, y: b.pooled, M: B, N: H, K: H, act: 'tanh',
      tasks: poolerSlots && pet ? { ...poolerSlots, delta: pet.delta, deltaRow0: 0, deltaLd: 0, deltaBlock: H } : null,
    },
    'pooler',
    gemmVariant,
  );
  const baseRows = pet ? pet.baseHeadRows : B;
  if (w.classifier && baseRows > 0) {
    const c = w.classifier;
    gemm(enc, dt, { x: b.pooled, w: c.weight, bias: c.bias, y: b.logits, M: baseRows, N: c.outDim, K: H }, 'classifier', gemmVariant);
  }
  if (pet?.taskHeads) {
    segGemm(enc, dt, pet.taskHeads, tables(pet.taskHeads, b.pooled, b.logits), false, 'task_heads', perTask);
  }
}
