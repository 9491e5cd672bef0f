import { NONE, segGemmTables, type SegGemmSegment, type SegmentTables } from '../../kernels/segmented.js';
import { embedTables, scaleTables, type EmbedSegment, type RowSegmentTables, type ScaleSegment } from '../../kernels/seg-rows.js';
import { gemmOutWidth, type LoraSiteTables, type ScaleSiteTables } from '../../model/families/decoder/graph.js';
import type { DecoderConfig } from '../../model/families/decoder/types.js';
import { siteKey } from '../../model/pet-graph-input.js';
import type { DecoderAdapter } from '../../pet/decoder-adapter.js';
import type { ResidentPet } from '../../pet/gpu-pool.js';

/** One sequence's share of a step: the tokens it computes now and where their K/V go. */
export interface StepSequence {
  /** The sequence's adapter, resident and pinned in the pool, or null for the base model. */
  adapter: ResidentPet<DecoderAdapter> | null;
  /** Token ids computed this step (a prefill chunk, or the one token of a decode). */
  tokens: readonly number[];
  /** Position of tokens[0] in the sequence. */
  startPos: number;
  /** Cache slot of each of these tokens (block·blockTokens + offset). */
  slots: readonly number[];
  /** Block table covering positions [0, startPos + tokens.length). */
  blockTable: readonly number[];
  /** Whether the logits after the last of these tokens are wanted. */
  wantLogits: boolean;
}

/** Host arrays of one step, ready to upload, in the engine's row order. */
export interface StepInputs {
  /** Step order: order[i] = index of the caller's sequence placed i-th (sequences of one adapter are contiguous). */
  order: number[];
  tokenIds: Uint32Array;
  tokenTable: Uint32Array;
  positions: Uint32Array;
  slotMapping: Uint32Array;
  rowInfo: Uint32Array;
  blockTables: Uint32Array;
  maxBlocksPerSeq: number;
  /** Row of each logit row (the last row of a sequence that wants logits), in step order. */
  logitRows: Uint32Array;
  /** Caller's sequence index of each logit row. */
  logitSeqs: number[];
  lora: StepLora | null;
}

export interface StepLora {
  sites: Map<string, LoraSiteTables>;
  scales: Map<string, ScaleSiteTables>;
  taskEmbeds: RowSegmentTables | null;
  lmHead: LoraSiteTables | null;
  taskHeads: SegmentTables | null;
  scratchElems: number;
  tables: (SegmentTables | RowSegmentTables)[];
}

/**
 * Lays out one step. Sequences are ordered so each adapter's rows (and logit
 * rows) are contiguous: one segment per (adapter, module) in ONE segmented
 * dispatch per site, whatever mix of adapters and ranks the step holds.
 */
export function buildStepInputs(c: DecoderConfig, seqs: readonly StepSequence[]): StepInputs {
  const order = seqs.map((_, i) => i);
  const key = (i: number): number => seqs[i]!.adapter?.floatBase ?? -1;
  order.sort((a, b) => key(a) - key(b) || a - b);
  const T = seqs.reduce((n, s) => n + s.tokens.length, 0);
  const maxBlocksPerSeq = Math.max(1, ...seqs.map((s) => s.blockTable.length));
  const tokenIds = new Uint32Array(T);
  const tokenTable = new Uint32Array(T * 3);
  const positions = new Uint32Array(T);
  const slotMapping = new Uint32Array(T);
  const rowInfo = new Uint32Array(T * 2);
  const blockTables = new Uint32Array(seqs.length * maxBlocksPerSeq);
  const logitRows: number[] = [];
  const logitSeqs: number[] = [];
  const groups: { adapter: ResidentPet<DecoderAdapter>; row0: number; rows: number; logit0: number; logits: number }[] = [];
  let row = 0;
  order.forEach((seqIndex, placed) => {
    const s = seqs[seqIndex]!;
    if (s.slots.length !== s.tokens.length) throw new RangeError(`sequence ${seqIndex}: ${s.tokens.length} tokens but ${s.slots.length} cache slots`);
    const row0 = row;
    s.tokens.forEach((t, i) => {
      tokenIds[row] = t;
      tokenTable[row * 3] = t;
      tokenTable[row * 3 + 1] = s.startPos + i;
      positions[row] = s.startPos + i;
      slotMapping[row] = s.slots[i]!;
      rowInfo[row * 2] = placed;
      rowInfo[row * 2 + 1] = s.startPos + i + 1;
      row++;
    });
    blockTables.set(s.blockTable, placed * maxBlocksPerSeq);
    const logit0 = logitRows.length;
    if (s.wantLogits && s.tokens.length > 0) {
      logitRows.push(row - 1);
      logitSeqs.push(seqIndex);
    }
    if (s.adapter) {
      const last = groups[groups.length - 1];
      if (last && last.adapter === s.adapter) {
        last.rows += row - row0;
        last.logits += logitRows.length - logit0;
      } else groups.push({ adapter: s.adapter, row0, rows: row - row0, logit0, logits: logitRows.length - logit0 });
    }
  });
  return {
    order,
    tokenIds,
    tokenTable,
    positions,
    slotMapping,
    rowInfo,
    blockTables,
    maxBlocksPerSeq,
    logitRows: Uint32Array.from(logitRows),
    logitSeqs,
    lora: groups.length > 0 ? buildLora(c, groups) : null,
  };
}

function buildLora(
  c: DecoderConfig,
  groups: readonly { adapter: ResidentPet<DecoderAdapter>; row0: number; rows: number; logit0: number; logits: number }[],
): StepLora {
  const bySite = new Map<string, { shrink: SegGemmSegment[]; expand: SegGemmSegment[]; scratch: number }>();
  const scaleSites = new Map<string, { input: ScaleSegment[]; output: ScaleSegment[] }>();
  const heads: SegGemmSegment[] = [];
  const embeds: EmbedSegment[] = [];
  for (const g of groups) {
    const base = g.adapter.floatBase;
    const packed = g.adapter.packed;
    for (const d of packed.scales) {
      const key = siteKey(d.layer, d.gemm);
      let site = scaleSites.get(key);
      if (!site) scaleSites.set(key, (site = { input: [], output: [] }));
      // Input rows are the GEMM's X (width = its K); output rows are its Y at the module's columns.
      const ld = d.mode === 'input' ? d.width : gemmOutWidth(c, d.gemm);
      site[d.mode].push({ first: g.row0 * ld + d.colOffset, rows: g.rows, width: d.width, ld, scaleOff: base + d.off });
    }
    if (packed.embedOff !== null) embeds.push({ row0: g.row0, rows: g.rows, tableOff: base + packed.embedOff });
    for (const d of packed.loras) {
      const onHead = d.gemm === 'lm_head';
      const rows = onHead ? g.logits : g.rows;
      if (rows === 0) continue;
      const row0 = onHead ? g.logit0 : g.row0;
      const key = onHead ? 'lm_head' : siteKey(d.layer, d.gemm);
      let site = bySite.get(key);
      if (!site) bySite.set(key, (site = { shrink: [], expand: [], scratch: 0 }));
      const ldOut = gemmOutWidth(c, d.gemm);
      site.shrink.push({ rows, K: d.K, N: d.rank, wOff: base + d.aOff, bOff: NONE, inOff: row0 * d.K, ldIn: d.K, outOff: site.scratch, ldOut: d.rank, scale: 1, act: 'none' });
      site.expand.push({ rows, K: d.rank, N: d.N, wOff: base + d.bOff, bOff: NONE, inOff: site.scratch, ldIn: d.rank, outOff: row0 * ldOut + d.colOffset, ldOut, scale: d.scale, act: 'none' });
      site.scratch += rows * d.rank;
    }
    if (packed.lmHeadOff !== null && g.logits > 0) {
      heads.push({ rows: g.logits, K: c.hiddenSize, N: c.vocabSize, wOff: base + packed.lmHeadOff, bOff: NONE, inOff: g.logit0 * c.hiddenSize, ldIn: c.hiddenSize, outOff: g.logit0 * c.vocabSize, ldOut: c.vocabSize, scale: 1, act: 'none' });
    }
  }
  const sites = new Map<string, LoraSiteTables>();
  const tables: (SegmentTables | RowSegmentTables)[] = [];
  let lmHead: LoraSiteTables | null = null;
  let scratchElems = 0;
  for (const [key, s] of bySite) {
    const t = { shrink: segGemmTables(s.shrink), expand: segGemmTables(s.expand) };
    tables.push(t.shrink, t.expand);
    scratchElems = Math.max(scratchElems, s.scratch);
    if (key === 'lm_head') lmHead = t;
    else sites.set(key, t);
  }
  const taskHeads = heads.length > 0 ? segGemmTables(heads) : null;
  if (taskHeads) tables.push(taskHeads);
  const scales = new Map<string, ScaleSiteTables>();
  for (const [key, s] of scaleSites) {
    const t = { input: s.input.length > 0 ? scaleTables(s.input) : null, output: s.output.length > 0 ? scaleTables(s.output) : null };
    for (const x of [t.input, t.output]) if (x) tables.push(x);
    scales.set(key, t);
  }
  const taskEmbeds = embeds.length > 0 ? embedTables(embeds, c.hiddenSize) : null;
  if (taskEmbeds) tables.push(taskEmbeds);
  return { sites, scales, taskEmbeds, lmHead, taskHeads, scratchElems, tables };
}
