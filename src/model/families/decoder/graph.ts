import type { BatchEncoder, BufferRange } from '../../../gpu/batch-encoder.js';
import type { ActivationArena } from '../../../gpu/buffers.js';
import { activationInPlace } from '../../../kernels/activation.js';
import { rmsNorm, rotaryEmbedding, siluMul } from '../../../kernels/decoder-ops.js';
import { embeddingSum } from '../../../kernels/embedding.js';
import { gemm, gemmChoiceFor, type GemmActivation } from '../../../kernels/gemm.js';
import { kvWrite, pagedAttention } from '../../../kernels/paged-attention.js';
import { gatherRows, layerNorm } from '../../../kernels/row-ops.js';
import { segEmbed, segScale, type RowSegmentTables } from '../../../kernels/seg-rows.js';
import { segGemm, type SegmentTables } from '../../../kernels/segmented.js';
import { bytesPerElement, type Dtype, type KernelChoices } from '../../../kernels/types.js';
import { siteKey } from '../../pet-graph-input.js';
import type { DecoderConfig, DecoderGemm, GpuDecoderLinear, GpuDecoderNorm, GpuDecoderWeights, GpuKvCache, StepBuffers, StepShape } from './types.js';

/** A LoRA site's two segmented GEMMs over all rows of the step (one segment per task row run). */
export interface LoraSiteTables {
  /** X·Aᵀ → scratch (rank columns per segment, never padded). */
  shrink: SegmentTables;
  /** out += s·U·Bᵀ at the module's column offset of the GEMM output. */
  expand: SegmentTables;
}

/** IA³ scaling at a GEMM site: of its input rows before it, of its output columns after it. */
export interface ScaleSiteTables {
  input: RowSegmentTables | null;
  output: RowSegmentTables | null;
}

/** The adapter work of one step: the graph sees segment tables and a pool, never tasks. */
export interface DecoderAdapterInput {
  pool: GPUBuffer;
  scratch: GPUBuffer;
  /** By siteKey(layer, gemm). */
  sites: ReadonlyMap<string, LoraSiteTables>;
  /** IA³ by siteKey(layer, gemm). */
  scales: ReadonlyMap<string, ScaleSiteTables>;
  /** modules_to_save embed_tokens: rows that read their task's own embedding table. */
  taskEmbeds: RowSegmentTables | null;
  /** LoRA on lm_head, over the logit rows. */
  lmHead: LoraSiteTables | null;
  /** modules_to_save lm_head: per-task heads that overwrite their rows' logits. */
  taskHeads: SegmentTables | null;
  ranges(t: SegmentTables | RowSegmentTables): { records: BufferRange; tiles: BufferRange };
}

/** Activation buffers of a step, from the arena (reused across steps). */
export interface DecoderActivations extends StepBuffers {
  hidden: GPUBuffer; // [T, H]
  hiddenMid: GPUBuffer; // [T, H]
  normed: GPUBuffer; // [T, H]
  qkv: GPUBuffer; // [T, Dq + 2·Dkv]
  context: GPUBuffer; // [T, Dq]
  inter: GPUBuffer; // [T, 2I | I]
  act: GPUBuffer; // [T, I]
  last: GPUBuffer; // [L, H]
  lastNormed: GPUBuffer; // [L, H]
}

const qkvWidth = (c: DecoderConfig): number => (c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim;
const upWidth = (c: DecoderConfig): number => (c.mlp === 'swiglu' ? 2 : 1) * c.intermediateSize;

/** Output row width (row stride) of a graph GEMM: where adapter deltas on it are written. */
export function gemmOutWidth(c: DecoderConfig, gemm: DecoderGemm | 'lm_head'): number {
  switch (gemm) {
    case 'qkv':
      return qkvWidth(c);
    case 'up':
      return upWidth(c);
    case 'lm_head':
      return c.vocabSize;
    case 'o':
    case 'down':
      return c.hiddenSize;
  }
}

export function stepActivations(arena: ActivationArena, c: DecoderConfig, dtype: Dtype, s: StepShape): DecoderActivations {
  const e = bytesPerElement(dtype);
  const T = s.tokens;
  const H = c.hiddenSize;
  return {
    tokenIds: arena.get('dec.tokenIds', T * 4),
    tokenTable: arena.get('dec.tokenTable', T * 12),
    positions: arena.get('dec.positions', T * 4),
    slotMapping: arena.get('dec.slotMapping', T * 4),
    rowInfo: arena.get('dec.rowInfo', T * 8),
    blockTables: arena.get('dec.blockTables', s.sequences * s.maxBlocksPerSeq * 4),
    logitRows: arena.get('dec.logitRows', s.logitRows * 4),
    logits: arena.get('dec.logits', s.logitRows * c.vocabSize * e),
    hidden: arena.get('dec.hidden', T * H * e),
    hiddenMid: arena.get('dec.hiddenMid', T * H * e),
    normed: arena.get('dec.normed', T * H * e),
    qkv: arena.get('dec.qkv', T * qkvWidth(c) * e),
    context: arena.get('dec.context', T * c.numAttentionHeads * c.headDim * e),
    inter: arena.get('dec.inter', T * upWidth(c) * e),
    act: arena.get('dec.act', T * c.intermediateSize * e),
    last: arena.get('dec.last', s.logitRows * H * e),
    lastNormed: arena.get('dec.lastNormed', s.logitRows * H * e),
  };
}

/**
 * Records one step of a causal decoder: rows are tokens of many sequences
 * (decode rows and prefill chunks alike; a decode row is a chunk of length 1).
 * embed → per layer [norm → qkv GEMM (+LoRA) → rope → K/V into the paged cache
 * → paged attention → o GEMM + residual (+LoRA) → norm → MLP (+LoRA) + residual]
 * → the last row of each sequence that needs logits → final norm → lm_head
 * (+LoRA, per-task heads). K/V of every row are written before attention reads,
 * and each row sees only keys up to its own position (rowInfo), so causality
 * holds inside a prefill chunk too.
 */
export function recordDecoderStep(
  enc: BatchEncoder,
  c: DecoderConfig,
  w: GpuDecoderWeights,
  kv: GpuKvCache,
  b: DecoderActivations,
  s: StepShape,
  kernels: KernelChoices,
  lora: DecoderAdapterInput | null,
): void {
  new StepRecorder(enc, c, w, kv, b, s, kernels, lora).record();
}

class StepRecorder {
  private readonly dt: Dtype;
  private readonly T: number;
  private readonly H: number;

  constructor(
    private readonly enc: BatchEncoder,
    private readonly c: DecoderConfig,
    private readonly w: GpuDecoderWeights,
    private readonly kv: GpuKvCache,
    private readonly b: DecoderActivations,
    private readonly s: StepShape,
    private readonly kernels: KernelChoices,
    private readonly lora: DecoderAdapterInput | null,
  ) {
    this.dt = w.dtype;
    this.T = s.tokens;
    this.H = c.hiddenSize;
  }

  record(): void {
    this.embed();
    this.w.layers.forEach((_, i) => this.layer(i));
    this.head();
  }

  private norm(n: GpuDecoderNorm, x: GPUBuffer, y: GPUBuffer, rows: number, label: string): void {
    const wg = this.kernels.rowWorkgroupSize;
    if (n.beta) layerNorm(this.enc, this.dt, { x, gamma: n.gamma, beta: n.beta, y, rows, dim: this.H, eps: this.c.normEps }, label, wg);
    else rmsNorm(this.enc, this.dt, { x, gamma: n.gamma, y, rows, dim: this.H, eps: this.c.normEps }, label, wg);
  }

  private embed(): void {
    const { enc, dt, w, b, T, H } = this;
    enc.phase('embed');
    const out = w.embedNorm ? b.hiddenMid : b.hidden;
    if (w.positionEmbed) {
      embeddingSum(enc, dt, { tokenTable: b.tokenTable, word: w.embed, position: w.positionEmbed, tokenType: w.zeroRow, y: out, tokens: T, hidden: H });
    } else {
      gatherRows(enc, dt, { rows: b.tokenIds, x: w.embed, y: out, count: T, dim: H }, 'embed');
    }
    const tasks = this.lora?.taskEmbeds;
    if (tasks) {
      // The task's table replaces the word embedding of its rows (learned positions added again).
      const lora = this.lora!;
      const positions = w.positionEmbed ? { positions: b.positions, table: w.positionEmbed } : null;
      segEmbed(enc, dt, tasks, { ...lora.ranges(tasks), pool: lora.pool, tokenIds: b.tokenIds, y: out, hidden: H, positions }, 'task_embed');
    }
    if (w.embedNorm) this.norm(w.embedNorm, b.hiddenMid, b.hidden, T, 'embed_norm');
  }

  /** A layer GEMM with the step's adapter work on it: IA³ input scaling, LoRA deltas and IA³ output scaling (before any activation). */
  private linear(layer: number, gemmName: DecoderGemm, l: GpuDecoderLinear, x: GPUBuffer, y: GPUBuffer, residual: GPUBuffer | null, act: GemmActivation): void {
    const { enc, dt } = this;
    const key = siteKey(layer, gemmName);
    const site = this.lora?.sites.get(key);
    const scale = this.lora?.scales.get(key);
    const label = `l${layer}.${gemmName}`;
    if (scale?.input) segScale(enc, dt, scale.input, { ...this.lora!.ranges(scale.input), pool: this.lora!.pool, x }, `${label}.ia3_in`);
    const split = !!site || !!scale?.output;
    gemm(
      enc,
      dt,
      { x, w: l.weight, bias: l.bias, y, residual, M: this.T, N: l.outDim, K: l.inDim, act: split ? 'none' : act },
      label,
      gemmChoiceFor(this.kernels, this.T),
    );
    if (!split) return;
    if (site) this.applyLora(site, x, y, label);
    if (scale?.output) segScale(enc, dt, scale.output, { ...this.lora!.ranges(scale.output), pool: this.lora!.pool, x: y }, `${label}.ia3_out`);
    if (act === 'gelu_tanh') activationInPlace(enc, dt, { x: y, rows: this.T, width: l.outDim, act: 'gelu_tanh' }, `l${layer}.${gemmName}.act`);
    else if (act !== 'none') throw new Error(`activation ${act} after a LoRA delta is not wired`);
  }

  private applyLora(site: LoraSiteTables, x: GPUBuffer, y: GPUBuffer, label: string): void {
    const lora = this.lora!;
    segGemm(this.enc, this.dt, site.shrink, { ...lora.ranges(site.shrink), inp: x, pool: lora.pool, out: lora.scratch }, false, `${label}.lora_shrink`);
    segGemm(this.enc, this.dt, site.expand, { ...lora.ranges(site.expand), inp: lora.scratch, pool: lora.pool, out: y }, true, `${label}.lora_expand`);
  }

  private layer(i: number): void {
    const { enc, dt, c, w, b, T, kv } = this;
    const l = w.layers[i]!;
    const q = c.numAttentionHeads * c.headDim;
    const kvWidth = c.numKeyValueHeads * c.headDim;
    const ldQkv = qkvWidth(c);
    enc.phase(`layer${i}`);
    this.norm(l.attnNorm, b.hidden, b.normed, T, `l${i}.attn_norm`);
    this.linear(i, 'qkv', l.qkv, b.normed, b.qkv, null, 'none');
    if (c.positions.kind === 'rotary') {
      rotaryEmbedding(enc, dt, {
        qkv: b.qkv,
        ldQkv,
        positions: b.positions,
        invFreq: w.positionTable!,
        tokens: T,
        numHeads: c.numAttentionHeads,
        numKvHeads: c.numKeyValueHeads,
        headDim: c.headDim,
        rotaryDims: c.positions.rotaryDims,
      }, `l${i}.rope`);
    }
    kvWrite(enc, dt, { qkv: b.qkv, ldQkv, kCol: q, vCol: q + kvWidth, slotMapping: b.slotMapping, kCache: kv.k[i]!, vCache: kv.v[i]!, tokens: T, kvWidth }, `l${i}.kv_write`);
    pagedAttention(enc, dt, {
      qkv: b.qkv,
      ldQkv,
      kCache: kv.k[i]!,
      vCache: kv.v[i]!,
      rowInfo: b.rowInfo,
      blockTables: b.blockTables,
      maxBlocksPerSeq: this.s.maxBlocksPerSeq,
      blockTokens: kv.blockTokens,
      out: b.context,
      tokens: T,
      numHeads: c.numAttentionHeads,
      numKvHeads: c.numKeyValueHeads,
      headDim: c.headDim,
      scale: 1 / Math.sqrt(c.headDim),
      alibiSlopes: c.positions.kind === 'alibi' ? w.positionTable : null,
    }, `l${i}.attention`, this.kernels.attention.workgroupSize);
    this.linear(i, 'o', l.o, b.context, b.hiddenMid, b.hidden, 'none');
    this.norm(l.mlpNorm, b.hiddenMid, b.normed, T, `l${i}.mlp_norm`);
    if (c.mlp === 'swiglu') {
      this.linear(i, 'up', l.up, b.normed, b.inter, null, 'none');
      siluMul(enc, dt, { x: b.inter, y: b.act, rows: T, width: c.intermediateSize }, `l${i}.silu_mul`);
      this.linear(i, 'down', l.down, b.act, b.hidden, b.hiddenMid, 'none');
    } else {
      this.linear(i, 'up', l.up, b.normed, b.inter, null, 'gelu_tanh');
      this.linear(i, 'down', l.down, b.inter, b.hidden, b.hiddenMid, 'none');
    }
  }

  private head(): void {
    const { enc, dt, c, w, b, s } = this;
    const L = s.logitRows;
    if (L === 0) return;
    enc.phase('lm_head');
    gatherRows(enc, dt, { rows: b.logitRows, x: b.hidden, y: b.last, count: L, dim: this.H }, 'last_rows');
    this.norm(w.finalNorm, b.last, b.lastNormed, L, 'final_norm');
    gemm(enc, dt, { x: b.lastNormed, w: w.lmHead, y: b.logits, M: L, N: c.vocabSize, K: this.H }, 'lm_head', gemmChoiceFor(this.kernels, L));
    const lora = this.lora;
    if (!lora) return;
    if (lora.taskHeads) {
      segGemm(enc, dt, lora.taskHeads, { ...lora.ranges(lora.taskHeads), inp: b.lastNormed, pool: lora.pool, out: b.logits }, false, 'task_heads');
    }
    if (lora.lmHead) this.applyLora(lora.lmHead, b.lastNormed, b.logits, 'lm_head');
  }
}
