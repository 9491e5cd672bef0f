import type { OperatorPlanner } from '../engine/model-runner.js';
import type { PetPlan } from '../engine/pet-plan.js';
import type { SegmentTables } from '../kernels/segmented.js';
import type { BertConfig } from '../model/families/bert.js';
import type { OperatorDecisions } from '../model/pet-graph-input.js';

/**
 * The PET operator scheduler: per batch, how the PET work that the plan
 * describes is laid out among the shared ops. PetS orders PET ops onto CUDA
 * streams; WebGPU through Dawn has one queue, and a batch here is already ONE
 * command buffer with ONE compute pass, so what remains to decide is which
 * work exists at all and in which order dispatches are recorded
 * (docs/scheduling.md, "Operator scheduler").
 *
 * 1. Element-wise PETs (BitFit biases, IA³ scales, LayerNorm swaps) always fold
 *    into the shared op's epilogue: they add zero dispatches and ~zero bytes.
 * 2. A slot-table site that no row of this batch touches runs the plain shared
 *    kernel: no per-row slot lookups and no delta epilogue. A batch of LoRA
 *    tasks on query/value leaves attention_output, intermediate, output and
 *    both LayerNorms of every layer plain.
 * 3. Every PET op gets FLOPs and bytes → arithmetic intensity. Memory-bound
 *    sparse deltas (diff, MaskBERT) are recorded between a site's LoRA shrink and
 *    expand, beside the compute chain they do not depend on, rather than after it.
 * Segmented dispatches (one per kind and site for all tasks) stay the default:
 * measured faster than per-task dispatches (bench/results, pets-*).
 */

/**
 * FLOPs per byte above which an op counts as compute-bound. Roughly the fp32
 * ridge point of current GPUs (tens of FLOP/byte); only the ordering in (3) uses it.
 */
export const RIDGE_FLOPS_PER_BYTE = 10;

export interface PetOpEstimate {
  site: string;
  op: 'lora_shrink' | 'lora_expand' | 'sparse' | 'adapter_down' | 'adapter_up' | 'task_heads';
  flops: number;
  bytes: number;
  intensity: number;
  bound: 'memory' | 'compute';
}

const opEstimate = (site: string, op: PetOpEstimate['op'], t: SegmentTables, dtypeBytes: number): PetOpEstimate => {
  const bytes = t.work.elems * dtypeBytes + t.work.words * 4;
  const intensity = bytes > 0 ? t.work.flops / bytes : 0;
  return { site, op, flops: t.work.flops, bytes, intensity, bound: intensity >= RIDGE_FLOPS_PER_BYTE ? 'compute' : 'memory' };
};

/** FLOPs, bytes and intensity of every PET dispatch of a planned batch. */
export function analysePetOps(plan: PetPlan, dtypeBytes: number): PetOpEstimate[] {
  const ops: PetOpEstimate[] = [];
  for (const [site, w] of plan.sites) {
    if (w.shrink) ops.push(opEstimate(site, 'lora_shrink', w.shrink, dtypeBytes));
    if (w.expand) ops.push(opEstimate(site, 'lora_expand', w.expand, dtypeBytes));
    if (w.sparse) ops.push(opEstimate(site, 'sparse', w.sparse, dtypeBytes));
    if (w.adapterDown) ops.push(opEstimate(site, 'adapter_down', w.adapterDown, dtypeBytes));
    if (w.adapterUp) ops.push(opEstimate(site, 'adapter_up', w.adapterUp, dtypeBytes));
  }
  if (plan.taskHeads) ops.push(opEstimate('heads', 'task_heads', plan.taskHeads, dtypeBytes));
  return ops;
}

/** 1 per slot-table site some task slot of the batch has an epilogue entry or delta flag at. */
export function activeSlotSites(plan: PetPlan): Uint8Array {
  const table = plan.slotTable;
  const active = new Uint8Array(table.numSites);
  for (let site = 0; site < table.numSites; site++) active[site] = table.siteHasEntries(site) ? 1 : 0;
  return active;
}

export const scheduleOperators: OperatorPlanner = (plan: PetPlan, _cfg: BertConfig, dtypeBytes: number): OperatorDecisions => {
  const ops = analysePetOps(plan, dtypeBytes);
  const memoryBoundSparse = new Set(ops.filter((o) => o.op === 'sparse' && o.bound === 'memory').map((o) => o.site));
  return {
    activeSlotSites: activeSlotSites(plan),
    interleaveSparse: memoryBoundSparse.size > 0,
  };
};
