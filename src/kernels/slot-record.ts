import { NONE } from './segmented.js';

/**
 * The slot table, the one place kernels find a row's task parameters:
 * u32 [site][slot][SLOT_RECORD_WORDS], one record per (graph site, slot). A
 * kernel reads record `siteBase + rowSlot[row] · SLOT_RECORD_WORDS` of its
 * site. shaders/lib_slot_record.wgsl is the WGSL side of this definition.
 *
 * Fields (pool offsets, NONE = keep the base value):
 * - GEMM sites: bias, pre-activation scale, post-activation scale, and a bit
 *   mask of the column blocks whose delta the batch wrote (0 = none);
 * - LayerNorm sites: gamma, beta;
 * - the attention context: its scale.
 */
export const SLOT_RECORD_WORDS = 4;

export const SlotField = {
  bias: 0,
  preScale: 1,
  postScale: 2,
  deltaBlocks: 3,
  gamma: 0,
  beta: 1,
  contextScale: 0,
} as const;
export type SlotField = (typeof SlotField)[keyof typeof SlotField];

/** Element offset of a site's first record (the kernels' `site_base` uniform). */
export const slotSiteBase = (site: number, numSlots: number): number => site * numSlots * SLOT_RECORD_WORDS;

/** A host slot table being filled for one batch; `words` is what is uploaded. */
export class SlotTable {
  readonly words: Uint32Array;

  constructor(
    readonly numSites: number,
    readonly numSlots: number,
  ) {
    this.words = new Uint32Array(numSites * numSlots * SLOT_RECORD_WORDS);
    for (let r = 0; r < this.words.length; r += SLOT_RECORD_WORDS) {
      this.words.fill(NONE, r, r + SlotField.deltaBlocks);
      this.words[r + SlotField.deltaBlocks] = 0;
    }
  }

  private record(site: number, slot: number): number {
    return slotSiteBase(site, this.numSlots) + slot * SLOT_RECORD_WORDS;
  }

  get(site: number, slot: number, field: SlotField): number {
    return this.words[this.record(site, slot) + field]!;
  }

  set(site: number, slot: number, field: SlotField, poolOffset: number): void {
    this.words[this.record(site, slot) + field] = poolOffset;
  }

  /** Mark column block `block` of a GEMM site's output as carrying this slot's delta. */
  flagDeltaBlock(site: number, slot: number, block: number): void {
    this.words[this.record(site, slot) + SlotField.deltaBlocks]! |= 1 << block;
  }

  /** Whether some task slot (slot 0 is the base model: never an entry) has an entry or a delta flag at `site`. */
  siteHasEntries(site: number): boolean {
    for (let slot = 1; slot < this.numSlots; slot++) {
      const r = this.record(site, slot);
      for (let f = 0; f < SLOT_RECORD_WORDS; f++) {
        if (this.words[r + f] !== (f === SlotField.deltaBlocks ? 0 : NONE)) return true;
      }
    }
    return false;
  }
}
