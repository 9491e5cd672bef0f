import type { BatchEncoder } from '../../../gpu/batch-encoder.js';
import type { ActivationArena } from '../../../gpu/buffers.js';
import { attention } from '../../../kernels/attention.js';
import { embeddingSum } from '../../../kernels/embedding.js';
import { gemm, gemmChoiceFor, type GemmArgs } from '../../../kernels/gemm.js';
import { gatherRows, layerNorm, type SlotLookup } from '../../../kernels/row-ops.js';
import { segGemm, segSparse, type SegmentTables } from '../../../kernels/segmented.js';
import { slotSiteBase } from '../../../kernels/slot-record.js';
import { bytesPerElement, type KernelChoices } from '../../../kernels/types.js';
import { siteKey, type PetGraphInput } from '../../pet-graph-input.js';
import type { GraphBuffers, PackedShape } from '../types.js';
import type { BertConfig } from './config.js';
import type { GpuBertWeights, GpuEncoderLayer } from './gpu-weights.js';
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
  kernels: KernelChoices,
  pet: PetGraphInput | null = null,
): void {
  const g = new BertRecorder(enc, cfg, w, b, s, kernels, pet);
  g.embeddings();
  w.layers.forEach((l, i) => g.layer(i, l));
  g.heads();
}

/** The recording of one batch: the ops of each part of the graph, with the PET work of their sites. */
class BertRecorder {
  private readonly dt: GpuBertWeights['dtype'];
  private readonly T: number;
  private readonly H: number;
  private readonly eps: number;
  private readonly perTask: boolean;

  constructor(
    private readonly enc: BatchEncoder,
    private readonly cfg: BertConfig,
    private readonly w: GpuBertWeights,
    private readonly b: BatchBuffers,
    private readonly s: PackedShape,
    private readonly kernels: KernelChoices,
    private readonly pet: PetGraphInput | null,
  ) {
    this.dt = w.dtype;
    this.T = s.tokens;
    this.H = cfg.hiddenSize;
    this.eps = cfg.layerNormEps;
    this.perTask = pet?.perTaskDispatch === true;
  }

  /** The slot lookup of a site, or null where no row of this batch has work (then the plain kernel runs). */
  private slots(rowSlot: 'token' | 'sequence', layer: number, site: BertSlotSite): SlotLookup | null {
    const pet = this.pet;
    if (!pet) return null;
    const index = bertSites.slotSiteIndex(this.cfg, layer, site);
    const active = pet.operators?.activeSlotSites ?? null;
    if (active && active[index] === 0) return null;
    return {
      rowSlot: rowSlot === 'token' ? pet.tokenSlot : pet.seqSlot,
      slotTable: pet.slotTable,
      pool: pet.pool,
      siteBase: slotSiteBase(index, pet.numSlots),
    };
  }

  private tables(t: SegmentTables, inp: GPUBuffer, out: GPUBuffer) {
    return { ...this.pet!.ranges(t), inp, out, pool: this.pet!.pool };
  }

  /**
   * One linear site: PET deltas of X into `delta`, the shared GEMM with the task
   * epilogue, then adapters on its output. Returns whether adapters ran (then the
   * residual was NOT fused and the LayerNorm must add it).
   */
  private linear(layer: number, site: BertGemm, args: Omit<GemmArgs, 'M' | 'N' | 'K'>, label: string): boolean {
    const { enc, dt, pet, perTask } = this;
    const shape = bertSites.gemmShape(this.cfg, site);
    const a: GemmArgs = { ...args, M: this.T, N: shape.N, K: shape.K };
    const work = pet?.sites.get(siteKey(layer, site));
    const adapters = !!work?.adapterDown;
    if (pet && work && (work.shrink || work.sparse)) {
      const interleave = pet.operators?.interleaveSparse === true;
      const sparse = (): void => {
        if (work.sparse) segSparse(enc, dt, work.sparse, { ...this.tables(work.sparse, a.x, pet.delta), weight: a.w }, `${label}.sparse`, perTask);
      };
      if (work.shrink && work.expand) {
        segGemm(enc, dt, work.shrink, this.tables(work.shrink, a.x, pet.scratch), false, `${label}.lora_shrink`, perTask);
        if (interleave) sparse();
        segGemm(enc, dt, work.expand, this.tables(work.expand, pet.scratch, pet.delta), false, `${label}.lora_expand`, perTask);
        if (!interleave) sparse();
      } else sparse();
    }
    const lookup = this.slots('token', layer, site);
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
      gemmChoiceFor(this.kernels, a.M),
    );
    if (pet && work?.adapterDown && work.adapterUp) {
      segGemm(enc, dt, work.adapterDown, this.tables(work.adapterDown, a.y, pet.scratch), false, `${label}.adapter_down`, perTask);
      segGemm(enc, dt, work.adapterUp, this.tables(work.adapterUp, pet.scratch, a.y), true, `${label}.adapter_up`, perTask);
    }
    return adapters;
  }

  embeddings(): void {
    const { enc, dt, w, b, T, H } = this;
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
      { x: b.scratch, ...w.embeddingLayerNorm, y: b.hidden, rows: T, dim: H, eps: this.eps, tasks: this.slots('token', 0, 'embeddings') },
      'embeddings.ln',
      this.kernels.rowWorkgroupSize,
    );
  }

  layer(i: number, l: GpuEncoderLayer): void {
    const { enc, dt, b, T, H, eps } = this;
    const heads = this.cfg.numAttentionHeads;
    enc.phase(`layer${i}`);
    this.linear(i, 'qkv', { x: b.hidden, w: l.qkv.weight, bias: l.qkv.bias, y: b.qkv }, `l${i}.qkv`);
    attention(
      enc,
      dt,
      { qkv: b.qkv, keyRange: b.keyRange, out: b.context, tokens: T, heads, headDim: H / heads, maxKeys: this.s.maxLength, tasks: this.slots('token', i, 'context') },
      `l${i}.attention`,
      this.kernels.attention,
    );
    const attnAdapters = this.linear(
      i,
      'attention_output',
      { x: b.context, w: l.attentionOutput.weight, bias: l.attentionOutput.bias, residual: b.hidden, y: b.scratch },
      `l${i}.attn_out`,
    );
    layerNorm(
      enc,
      dt,
      { x: b.scratch, ...l.attentionLayerNorm, residual: attnAdapters ? b.hidden : null, y: b.hiddenMid, rows: T, dim: H, eps, tasks: this.slots('token', i, 'attention_layernorm') },
      `l${i}.attn_ln`,
      this.kernels.rowWorkgroupSize,
    );
    this.linear(
      i,
      'intermediate',
      { x: b.hiddenMid, w: l.intermediate.weight, bias: l.intermediate.bias, y: b.intermediate, act: 'gelu' },
      `l${i}.intermediate`,
    );
    const outAdapters = this.linear(
      i,
      'output',
      { x: b.intermediate, w: l.output.weight, bias: l.output.bias, residual: b.hiddenMid, y: b.scratch },
      `l${i}.output`,
    );
    layerNorm(
      enc,
      dt,
      { x: b.scratch, ...l.outputLayerNorm, residual: outAdapters ? b.hiddenMid : null, y: b.hidden, rows: T, dim: H, eps, tasks: this.slots('token', i, 'output_layernorm') },
      `l${i}.out_ln`,
      this.kernels.rowWorkgroupSize,
    );
  }

  /** [CLS] rows → pooler (tanh) → the base classifier for base rows, task heads as one segmented GEMM. */
  heads(): void {
    const { enc, dt, w, b, H, pet } = this;
    enc.phase('heads');
    const B = this.s.sequences;
    gatherRows(enc, dt, { rows: b.clsRows, x: b.hidden, y: b.cls, count: B, dim: H }, 'cls_rows');
    const poolerSlots = this.slots('sequence', 0, 'pooler');
    gemm(
      enc,
      dt,
      {
        x: b.cls, w: w.pooler.weight, bias: w.pooler.bias, y: b.pooled, M: B, N: H, K: H, act: 'tanh',
        tasks: poolerSlots && pet ? { ...poolerSlots, delta: pet.delta, deltaRow0: 0, deltaLd: 0, deltaBlock: H } : null,
      },
      'pooler',
      gemmChoiceFor(this.kernels, B),
    );
    const baseRows = pet ? pet.baseHeadRows : B;
    if (w.classifier && baseRows > 0) {
      const c = w.classifier;
      gemm(enc, dt, { x: b.pooled, w: c.weight, bias: c.bias, y: b.logits, M: baseRows, N: c.outDim, K: H }, 'classifier', gemmChoiceFor(this.kernels, baseRows));
    }
    if (pet?.taskHeads) {
      segGemm(enc, dt, pet.taskHeads, this.tables(pet.taskHeads, b.pooled, b.logits), false, 'task_heads', this.perTask);
    }
  }
}
