// The slot-table record, WGSL side of src/kernels/slot-record.ts (SLOT_RECORD_WORDS,
// SlotField): slot_table is u32 [site][slot][SLOT_RECORD_WORDS] and a row's record
// at a site starts at site_base + row_slot[row] · SLOT_RECORD_WORDS. Fields hold
// pool offsets (NONE = keep the base value) and, for GEMMs, the delta block flags.
// Inlined with `#include lib_slot_record` inside the kernel's `#if TASKS`.
const SLOT_RECORD_WORDS = 4u;
// GEMM sites.
const SLOT_BIAS = 0u;
const SLOT_PRE_SCALE = 1u;
const SLOT_POST_SCALE = 2u;
const SLOT_DELTA_BLOCKS = 3u;
// LayerNorm sites.
const SLOT_GAMMA = 0u;
const SLOT_BETA = 1u;
// The attention context.
const SLOT_CONTEXT_SCALE = 0u;
const NONE = 0xffffffffu;

fn slot_record(site_base: u32, slot: u32) -> u32 {
  return site_base + slot * SLOT_RECORD_WORDS;
}
