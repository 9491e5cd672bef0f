import type { ResidentPet } from '../../pet/gpu-pool.js';

/** One caller row of a mixed batch: its task (null = the base model) and tokens. */
export interface PlanInputRow {
  task: ResidentPet | null;
  inputIds: readonly number[];
  tokenTypeIds?: readonly number[] | undefined;
}

/**
 * What a row's PET needs, in plan order: base rows, then element-wise PETs
 * (BitFit, IA³: only epilogue lookups), then X-derived deltas (LoRA, diff, mask:
 * one contiguous delta region that a small scratch buffer covers), then adapters.
 */
export const RowClass = { base: 0, elementwise: 1, delta: 2, adapter: 3 } as const;
export type RowClass = (typeof RowClass)[keyof typeof RowClass];

export function rowClass(task: ResidentPet | null): RowClass {
  if (!task) return RowClass.base;
  const p = task.packed;
  if (p.lowRank.length > 0 || p.sparse.length > 0) return RowClass.delta;
  if (p.adapters.length > 0) return RowClass.adapter;
  return RowClass.elementwise;
}

/** A slot's rows in plan order: first token row and token count, first sequence and sequence count. */
export interface SlotRows {
  tokenStart: number;
  tokens: number;
  seqStart: number;
  seqs: number;
}

/** Rows of a batch reordered by task, and the slot of every row. */
export interface RowLayout {
  /** plan row i is caller row order[i]. */
  order: number[];
  /** Caller rows in plan order. */
  planned: PlanInputRow[];
  /** Distinct tasks by slot (slot 0 = base, null). */
  slotTasks: (ResidentPet | null)[];
  slotRows: SlotRows[];
  tokenSlot: Uint32Array;
  seqSlot: Uint32Array;
  /** Token rows [deltaRow0, deltaRow0 + deltaRows) are the delta region. */
  deltaRow0: number;
  deltaRows: number;
}

/**
 * Slots in first-appearance order (slot 0 = base), then rows sorted by
 * (class, slot), stable: each task's rows end up contiguous.
 */
export function layOutRows(rows: readonly PlanInputRow[]): RowLayout {
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

  const tokens = planned.reduce((n, r) => n + r.inputIds.length, 0);
  const tokenSlot = new Uint32Array(tokens);
  const seqSlot = new Uint32Array(planned.length);
  const slotRows = slotTasks.map((): SlotRows => ({ tokenStart: -1, tokens: 0, seqStart: -1, seqs: 0 }));
  let deltaRow0 = -1;
  let deltaEnd = 0;
  let t = 0;
  planned.forEach((r, s) => {
    const slot = slotOfRow(r);
    const at = slotRows[slot]!;
    seqSlot[s] = slot;
    if (at.seqStart === -1) at.seqStart = s;
    at.seqs += 1;
    if (at.tokenStart === -1) at.tokenStart = t;
    at.tokens += r.inputIds.length;
    tokenSlot.fill(slot, t, t + r.inputIds.length);
    // The delta region: all rows of delta-class tasks (contiguous by the sort).
    if (rowClass(r.task) === RowClass.delta) {
      if (deltaRow0 === -1) deltaRow0 = t;
      deltaEnd = t + r.inputIds.length;
    }
    t += r.inputIds.length;
  });
  return {
    order,
    planned,
    slotTasks,
    slotRows,
    tokenSlot,
    seqSlot,
    deltaRow0: deltaRow0 === -1 ? 0 : deltaRow0,
    deltaRows: deltaRow0 === -1 ? 0 : deltaEnd - deltaRow0,
  };
}
