import { NONE, segGemmTables, segSparseTables, type SegGemmSegment, type SegSparseSegment, type SegmentTables } from '../kernels/segmented.js';
import type { BertConfig } from '../model/bert-config.js';
import {
  siteKey,
  slotSiteCount,
  slotSiteIndex,
  type GemmSite,
  type LayerGemmSite,
  type SiteDeltaWork,
} from '../model/pet-graph-input.js';
import type { ResidentPet } from '../pet/gpu-pool.js';

/**
 * Plans the PET work of one mixed batch (rows of many tasks + plain-base rows).
 *
 * Rows are reordered so each task's tokens are contiguous and tasks are grouped
 * by what their PET needs: base rows, then element-wise PETs (BitFit, IA³: only
 * epilogue lookups), then X-derived deltas (LoRA, diff, mask: their rows form ONE
 * contiguous delta region that a small scratch buffer covers), then adapters.
 * Each task becomes a *slot*; every token/sequence carries its slot, and a slot
 * table gives, per graph site and slot, pool offsets of the task's epilogue values.
 * Per site and kind, all tasks' work becomes ONE segment table (SGMV-style).
 */

export interface PlanInputRow {
  task: ResidentPet | null;
  inputIds: readonly number[];
  tokenTypeIds?: readonly number[] | undefined;
}

export interface PetPlan {
  /** plan row i is caller row order[i]. */
  order: number[];
  /** rows in plan order. */
  inputIds: (readonly number[])[];
  tokenTypeIds: (readonly number[])[] | undefined;
  numSlots: number;
  /** Distinct tasks by slot (slot 0 = base, null). */
  slotTasks: (ResidentPet | null)[];
  tokenSlot: Uint32Array;
  seqSlot: Uint32Array;
  slotTable: Uint32Array;
  /** Token rows [deltaRow0, deltaRow0 + deltaRows) carry X-derived deltas. */
  deltaRow0: number;
  deltaRows: number;
  sites: Map<string, SiteDeltaWork>;
  /** Sequences [0, baseHeadRows) use the base model's classifier (if any). */
  baseHeadRows: number;
  taskHeads: SegmentTables | null;
  /** Per plan row: offset and width of its logits, or width 0 (embedding task / headless base). */
  logitsOffset: number[];
  logitsWidth: number[];
  logitsElems: number;
}

function rowClass(t: ResidentPet | null): number {
  if (!t) return 0;
  const p = t.packed;
  if (p.lowRank.length > 0 || p.sparse.length > 0) return 2;
  if (p.adapters.length > 0) return 3;
  return 1;
}

export function buildPetPlan(cfg: BertConfig, rows: readonly PlanInputRow[], baseNumLabels: number): PetPlan {
  const H = cfg.hiddenSize;
  const I = cfg.intermediateSize;

  // Slots in first-appearance order, then rows sorted by (class, slot) — stable.
  const slotOf = new Map<string, number>();
  const slotTasks: (ResidentPet | null)[] = [null];
  for (const r of rows) {
    if (r.task && !slotOf.has(r.task.taskId)) {
      slotOf.set(r.task.taskId, slotTasks.length);
      slotTasks.push(r.task);
    }
  }
  const slotOfRow = (r: PlanInputRow): number => (r.task ? slotOf.get(r.task.taskId)! : 0);
  const order = rows.map((_, i) => i);
  order.sort((a, b) => {
    const ra = rows[a]!;
    const rb = rows[b]!;
    return rowClass(ra.task) - rowClass(rb.task) || slotOfRow(ra) - slotOfRow(rb) || a - b;
  });
  const planned = order.map((i) => rows[i]!);
  const numSlots = slotTasks.length;

  // Token and sequence ranges per slot.
  const tokens = planned.reduce((n, r) => n + r.inputIds.length, 0);
  const tokenSlot = new Uint32Array(tokens);
  const seqSlot = new Uint32Array(planned.length);
  const slotTokenStart = new Array<number>(numSlots).fill(-1);
  const slotTokenCount = new Array<number>(numSlots).fill(0);
  const slotSeqStart = new Array<number>(numSlots).fill(-1);
  const slotSeqCount = new Array<number>(numSlots).fill(0);
  let t = 0;
  planned.forEach((r, s) => {
    const slot = slotOfRow(r);
    seqSlot[s] = slot;
    if (slotSeqStart[slot] === -1) slotSeqStart[slot] = s;
    slotSeqCount[slot]! += 1;
    if (slotTokenStart[slot] === -1) slotTokenStart[slot] = t;
    slotTokenCount[slot]! += r.inputIds.length;
    tokenSlot.fill(slot, t, t + r.inputIds.length);
    t += r.inputIds.length;
  });

  // Delta region: all rows of class-2 tasks (contiguous by construction).
  let deltaRow0 = 0;
  let deltaEnd = 0;
  let seenDelta = false;
  t = 0;
  for (const r of planned) {
    if (rowClass(r.task) === 2) {
      if (!seenDelta) deltaRow0 = t;
      seenDelta = true;
      deltaEnd = t + r.inputIds.length;
    }
    t += r.inputIds.length;
  }
  const deltaRows = seenDelta ? deltaEnd - deltaRow0 : 0;

  // Slot table: [site][slot][4]; defaults = none.
  const numSites = slotSiteCount(cfg);
  const slotTable = new Uint32Array(numSites * numSlots * 4);
  for (let i = 0; i < slotTable.length; i += 4) {
    slotTable[i] = NONE;
    slotTable[i + 1] = NONE;
    slotTable[i + 2] = NONE;
    slotTable[i + 3] = 0;
  }
  const rec = (site: number, slot: number): number => (site * numSlots + slot) * 4;

  const sites = new Map<string, SiteDeltaWork>();
  const site = (layer: number, gemm: LayerGemmSite): SiteDeltaWork => {
    const key = siteKey(layer, gemm);
    let s = sites.get(key);
    if (!s) {
      s = { shrink: null, expand: null, sparse: null, adapterDown: null, adapterUp: null, scratchElems: 0 };
      sites.set(key, s);
    }
    return s;
  };
  const shrink = new Map<string, SegGemmSegment[]>();
  const expand = new Map<string, SegGemmSegment[]>();
  const sparse = new Map<string, SegSparseSegment[]>();
  const down = new Map<string, SegGemmSegment[]>();
  const up = new Map<string, SegGemmSegment[]>();
  const scratch = new Map<string, number>();
  const push = <T>(m: Map<string, T[]>, key: string, v: T): void => {
    const list = m.get(key);
    if (list) list.push(v);
    else m.set(key, [v]);
  };
  /** Input width (= row stride) of each GEMM: what X is. */
  const gemmK: Record<LayerGemmSite, number> = { qkv: H, attention_output: H, intermediate: H, output: I };
  const gemmN: Record<LayerGemmSite, number> = { qkv: 3 * H, attention_output: H, intermediate: I, output: H };

  for (let slot = 1; slot < numSlots; slot++) {
    const task = slotTasks[slot]!;
    const p = task.packed;
    const f = (rel: number): number => task.floatBase + rel;
    const w = (rel: number): number => task.wordBase + rel;
    const row0 = slotTokenStart[slot]!;
    const rowsN = slotTokenCount[slot]!;

    for (const [key, e] of p.epilogues) {
      const [layerStr, gemm] = key.split(':') as [string, GemmSite];
      const r = rec(slotSiteIndex(cfg, Number(layerStr), gemm), slot);
      if (e.bias !== null) slotTable[r] = f(e.bias);
      if (e.preScale !== null) slotTable[r + 1] = f(e.preScale);
      if (e.postScale !== null) slotTable[r + 2] = f(e.postScale);
    }
    for (const [key, ln] of p.layerNorms) {
      const [layerStr, lnSite] = key.split(':') as [string, 'attention_layernorm' | 'output_layernorm' | 'embeddings'];
      const r = rec(slotSiteIndex(cfg, Number(layerStr), lnSite), slot);
      slotTable[r] = f(ln.gamma);
      slotTable[r + 1] = f(ln.beta);
    }
    for (const [layer, off] of p.contextScales) slotTable[rec(slotSiteIndex(cfg, layer, 'context'), slot)] = f(off);

    for (const d of p.lowRank) {
      const g = d.gemm as LayerGemmSite;
      const key = siteKey(d.layer, g);
      site(d.layer, g);
      slotTable[rec(slotSiteIndex(cfg, d.layer, g), slot) + 3]! |= 1 << Math.floor(d.colOffset / (g === 'qkv' ? H : gemmN[g]));
      const uOff = scratch.get(key) ?? 0;
      scratch.set(key, uOff + rowsN * d.rank);
      push(shrink, key, {
        rows: rowsN, K: d.K, N: d.rank, wOff: f(d.aOff), bOff: NONE,
        inOff: row0 * gemmK[g], ldIn: gemmK[g], outOff: uOff, ldOut: d.rank, scale: 1, act: 'none',
      });
      push(expand, key, {
        rows: rowsN, K: d.rank, N: d.N, wOff: f(d.bOff), bOff: NONE,
        inOff: uOff, ldIn: d.rank, outOff: (row0 - deltaRow0) * gemmN[g] + d.colOffset, ldOut: gemmN[g],
        scale: d.scale, act: 'none',
      });
    }
    for (const d of p.sparse) {
      const g = d.gemm as LayerGemmSite;
      site(d.layer, g);
      slotTable[rec(slotSiteIndex(cfg, d.layer, g), slot) + 3]! |= 1 << Math.floor(d.colOffset / (g === 'qkv' ? H : gemmN[g]));
      push(sparse, siteKey(d.layer, g), {
        rows: rowsN, K: d.K, N: d.N, ptrOff: w(d.ptrOff), idxOff: w(d.idxOff),
        valOff: d.valOff === null ? NONE : f(d.valOff), wOff: d.colOffset * d.K,
        inOff: row0 * gemmK[g], ldIn: gemmK[g], outOff: (row0 - deltaRow0) * gemmN[g] + d.colOffset, ldOut: gemmN[g],
        nnz: d.nnz,
      });
    }
    for (const a of p.adapters) {
      const key = siteKey(a.layer, a.gemm);
      site(a.layer, a.gemm);
      const uOff = scratch.get(key) ?? 0;
      scratch.set(key, uOff + rowsN * a.bottleneck);
      push(down, key, {
        rows: rowsN, K: H, N: a.bottleneck, wOff: f(a.downW), bOff: f(a.downB),
        inOff: row0 * H, ldIn: H, outOff: uOff, ldOut: a.bottleneck, scale: 1, act: a.activation,
      });
      push(up, key, {
        rows: rowsN, K: a.bottleneck, N: H, wOff: f(a.upW), bOff: f(a.upB),
        inOff: uOff, ldIn: a.bottleneck, outOff: row0 * H, ldOut: H, scale: 1, act: 'none',
      });
    }
  }
  for (const [key, s] of sites) {
    const sh = shrink.get(key);
    const ex = expand.get(key);
    const sp = sparse.get(key);
    const dn = down.get(key);
    const upl = up.get(key);
    s.shrink = sh ? segGemmTables(sh) : null;
    s.expand = ex ? segGemmTables(ex) : null;
    s.sparse = sp ? segSparseTables(sp) : null;
    s.adapterDown = dn ? segGemmTables(dn) : null;
    s.adapterUp = upl ? segGemmTables(upl) : null;
    s.scratchElems = scratch.get(key) ?? 0;
  }

  // Heads: base sequences first (base classifier), then per-task heads in one segmented GEMM.
  const logitsOffset = new Array<number>(planned.length).fill(0);
  const logitsWidth = new Array<number>(planned.length).fill(0);
  const baseHeadRows = slotSeqCount[0] ?? 0;
  let cursor = 0;
  for (let s = 0; s < baseHeadRows; s++) {
    logitsOffset[s] = cursor;
    logitsWidth[s] = baseNumLabels;
    cursor += baseNumLabels;
  }
  const headSegments: SegGemmSegment[] = [];
  for (let slot = 1; slot < numSlots; slot++) {
    const task = slotTasks[slot]!;
    const head = task.packed.head;
    if (!head) continue;
    const s0 = slotSeqStart[slot]!;
    const count = slotSeqCount[slot]!;
    headSegments.push({
      rows: count, K: H, N: head.numLabels, wOff: task.floatBase + head.wOff, bOff: task.floatBase + head.bOff,
      inOff: s0 * H, ldIn: H, outOff: cursor, ldOut: head.numLabels, scale: 1, act: 'none',
    });
    for (let s = s0; s < s0 + count; s++) {
      logitsOffset[s] = cursor;
      logitsWidth[s] = head.numLabels;
      cursor += head.numLabels;
    }
  }

  return {
    order,
    inputIds: planned.map((r) => r.inputIds),
    tokenTypeIds: rows.some((r) => r.tokenTypeIds) ? planned.map((r) => r.tokenTypeIds ?? r.inputIds.map(() => 0)) : undefined,
    numSlots,
    slotTasks,
    tokenSlot,
    seqSlot,
    slotTable,
    deltaRow0,
    deltaRows,
    sites,
    baseHeadRows,
    taskHeads: headSegments.length > 0 ? segGemmTables(headSegments) : null,
    logitsOffset,
    logitsWidth,
    logitsElems: cursor,
  };
}
