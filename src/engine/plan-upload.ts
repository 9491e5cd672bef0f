import type { BufferRange } from '../gpu/batch-encoder.js';
import { alignUp, type ActivationArena } from '../gpu/buffers.js';
import type { SegmentTables } from '../kernels/segmented.js';
import type { BertConfig, BertGemm } from '../model/families/bert.js';
import type { AnyModelFamily } from '../model/families/index.js';
import type { PetGraphInput } from '../model/pet-graph-input.js';
import type { PetPlan } from './pet-plan.js';

/**
 * Upload a plan's slot and segment tables into arena buffers (one write each)
 * and size the delta and scratch buffers: what the graph needs as PetGraphInput.
 */
export function uploadPlan(
  device: GPUDevice,
  arena: ActivationArena,
  pool: GPUBuffer,
  plan: PetPlan,
  model: { config: BertConfig; family: AnyModelFamily },
  dtypeBytes: number,
  perTaskDispatch: boolean,
): PetGraphInput {
  const tokenSlot = arena.get('petTokenSlot', plan.tokenSlot.byteLength);
  const seqSlot = arena.get('petSeqSlot', plan.seqSlot.byteLength);
  const slotTable = arena.get('petSlotTable', plan.slotTable.words.byteLength);
  device.queue.writeBuffer(tokenSlot, 0, plan.tokenSlot);
  device.queue.writeBuffer(seqSlot, 0, plan.seqSlot);
  device.queue.writeBuffer(slotTable, 0, plan.slotTable.words);

  const tables: SegmentTables[] = [];
  let scratchElems = 0;
  let maxDeltaN = 0;
  for (const s of plan.sites.values()) {
    for (const t of [s.shrink, s.expand, s.sparse, s.adapterDown, s.adapterUp]) if (t) tables.push(t);
    scratchElems = Math.max(scratchElems, s.scratchElems);
    if (s.shrink || s.sparse) maxDeltaN = Math.max(maxDeltaN, model.family.sites.gemmShape(model.config, s.gemm as BertGemm).N);
  }
  if (plan.taskHeads) tables.push(plan.taskHeads);
  const ranges = uploadSegmentTables(device, arena, tables);

  return {
    numSlots: plan.numSlots,
    tokenSlot,
    seqSlot,
    slotTable,
    pool,
    delta: arena.get('petDelta', Math.max(1, plan.deltaRows * maxDeltaN) * dtypeBytes),
    deltaRow0: plan.deltaRow0,
    deltaRows: plan.deltaRows,
    scratch: arena.get('petScratch', Math.max(1, scratchElems) * dtypeBytes),
    sites: plan.sites,
    perTaskDispatch,
    baseHeadRows: plan.baseHeadRows,
    taskHeads: plan.taskHeads,
    ranges,
  };
}

/** All segment tables in one blob, each section 256-byte aligned (storage binding offsets). */
/** What a segmented dispatch uploads: u32 records and tiles. */
export interface UploadableTables {
  records: Uint32Array;
  tiles: Uint32Array;
}

export function uploadSegmentTables<T extends UploadableTables = SegmentTables>(
  device: GPUDevice,
  arena: ActivationArena,
  tables: readonly T[],
): (t: T) => { records: BufferRange; tiles: BufferRange } {
  let bytes = 0;
  const placed = new Map<T, { records: number; tiles: number }>();
  for (const t of tables) {
    const records = bytes;
    bytes = alignUp(bytes + t.records.byteLength);
    const tiles = bytes;
    bytes = alignUp(bytes + t.tiles.byteLength);
    placed.set(t, { records, tiles });
  }
  const blob = new Uint8Array(Math.max(bytes, 256));
  for (const t of tables) {
    const at = placed.get(t)!;
    blob.set(new Uint8Array(t.records.buffer, t.records.byteOffset, t.records.byteLength), at.records);
    blob.set(new Uint8Array(t.tiles.buffer, t.tiles.byteOffset, t.tiles.byteLength), at.tiles);
  }
  const buffer = arena.get('petTables', blob.byteLength);
  device.queue.writeBuffer(buffer, 0, blob);
  const range = (offset: number, size: number): BufferRange => ({ buffer, offset, size: Math.max(4, size) });
  return (t) => {
    const at = placed.get(t);
    if (!at) throw new Error('segment table was not uploaded');
    return { records: range(at.records, t.records.byteLength), tiles: range(at.tiles, t.tiles.byteLength) };
  };
}
