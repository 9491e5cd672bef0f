import type { SlotTable } from '../kernels/slot-record.js';
import type { BertConfig } from '../model/families/bert.js';
import type { AnyModelFamily } from '../model/families/index.js';
import type { SiteDeltaWork, SiteKey } from '../model/pet-graph-input.js';
import type { ResidentPet } from '../pet/gpu-pool.js';
import { layOutHeads, type HeadLayout } from './plan/heads.js';
import { layOutRows, type PlanInputRow } from './plan/rows.js';
import { SegmentPlanner } from './plan/segments.js';
import { buildSlotTable } from './plan/slots.js';

export { RowClass, rowClass, type PlanInputRow } from './plan/rows.js';

/**
 * Plans the PET work of one mixed batch (rows of many tasks + plain-base rows):
 * 1. rows reordered so each task's rows are contiguous, grouped by what their
 *    PET needs (plan/rows.ts, RowClass); each task becomes a *slot*;
 * 2. the slot table: per graph site and slot, pool offsets of the task's
 *    epilogue values and its delta column blocks (plan/slots.ts);
 * 3. per GEMM site and PET kind, ONE segment table over all tasks (plan/segments.ts);
 * 4. where every row's logits land, task heads as one segmented GEMM (plan/heads.ts).
 */
export interface PetPlan extends HeadLayout {
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
  slotTable: SlotTable;
  /** Token rows [deltaRow0, deltaRow0 + deltaRows) carry X-derived deltas. */
  deltaRow0: number;
  deltaRows: number;
  sites: Map<SiteKey, SiteDeltaWork>;
}

export function buildPetPlan(
  cfg: BertConfig,
  family: AnyModelFamily,
  rows: readonly PlanInputRow[],
  baseNumLabels: number,
): PetPlan {
  const layout = layOutRows(rows);
  const { planned, slotTasks, slotRows } = layout;
  const segments = new SegmentPlanner(cfg, family.sites, layout.deltaRow0);
  for (let slot = 1; slot < slotTasks.length; slot++) segments.addSlot(slotTasks[slot]!, slotRows[slot]!);
  const heads = layOutHeads(slotTasks, slotRows, planned.length, family.heads(cfg, baseNumLabels).pooledWidth, baseNumLabels);
  return {
    order: layout.order,
    inputIds: planned.map((r) => r.inputIds),
    tokenTypeIds: rows.some((r) => r.tokenTypeIds) ? planned.map((r) => r.tokenTypeIds ?? r.inputIds.map(() => 0)) : undefined,
    numSlots: slotTasks.length,
    slotTasks,
    tokenSlot: layout.tokenSlot,
    seqSlot: layout.seqSlot,
    slotTable: buildSlotTable(cfg, family.sites, slotTasks),
    deltaRow0: layout.deltaRow0,
    deltaRows: layout.deltaRows,
    sites: segments.finish(),
    ...heads,
  };
}
