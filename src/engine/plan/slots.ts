import { SlotField, SlotTable } from '../../kernels/slot-record.js';
import type { BertConfig, BertLayerNormSite } from '../../model/families/bert.js';
import type { AnyModelFamily } from '../../model/families/index.js';
import { parseSiteKey, type GemmSite } from '../../model/pet-graph-input.js';
import type { ResidentPet } from '../../pet/gpu-pool.js';

/**
 * The slot table of a batch: for every task slot, pool offsets of its
 * epilogue values (biases, scales), LayerNorm parameters and context scale at
 * each site, and the column blocks its X-derived deltas write. Slot 0 (base)
 * keeps every default.
 */
export function buildSlotTable(cfg: BertConfig, sites: AnyModelFamily['sites'], slotTasks: readonly (ResidentPet | null)[]): SlotTable {
  const table = new SlotTable(sites.slotSiteCount(cfg), slotTasks.length);
  for (let slot = 1; slot < slotTasks.length; slot++) {
    const task = slotTasks[slot]!;
    const p = task.packed;
    const f = (rel: number): number => task.floatBase + rel;

    for (const [key, e] of p.epilogues) {
      const { layer, site: gemm } = parseSiteKey<GemmSite>(key);
      const site = sites.slotSiteIndex(cfg, layer, gemm);
      if (e.bias !== null) table.set(site, slot, SlotField.bias, f(e.bias));
      if (e.preScale !== null) table.set(site, slot, SlotField.preScale, f(e.preScale));
      if (e.postScale !== null) table.set(site, slot, SlotField.postScale, f(e.postScale));
    }
    for (const [key, ln] of p.layerNorms) {
      const { layer, site: norm } = parseSiteKey<BertLayerNormSite | 'embeddings'>(key);
      const site = sites.slotSiteIndex(cfg, layer, norm);
      table.set(site, slot, SlotField.gamma, f(ln.gamma));
      table.set(site, slot, SlotField.beta, f(ln.beta));
    }
    for (const [layer, off] of p.contextScales) table.set(sites.slotSiteIndex(cfg, layer, 'context'), slot, SlotField.contextScale, f(off));

    for (const d of [...p.lowRank, ...p.sparse]) {
      const gemm = d.gemm as Exclude<GemmSite, 'pooler'>;
      const block = Math.floor(d.colOffset / sites.gemmShape(cfg, gemm).deltaBlock);
      table.flagDeltaBlock(sites.slotSiteIndex(cfg, d.layer, gemm), slot, block);
    }
  }
  return table;
}
