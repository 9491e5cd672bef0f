// Multi-head self-attention over PACKED variable-length sequences, online form:
// the same layout, bindings, uniforms and result as attention.wgsl (read its
// header for qkv and key_range), with workgroup memory that does not grow with
// the key count.
//
// attention.wgsl holds all scores of a (query, head) in workgroup memory, so
// its pipeline is specialised per MAX_KEYS and stops compiling once 4·MAX_KEYS
// bytes pass maxComputeWorkgroupStorageSize (WebGPU guarantees only 16 KiB:
// 2048 keys, MAX_KEYS being a power of two). Here keys stream through one tile
// of WG at a time with an online softmax (Milakov & Gimelshein 2018;
// FlashAttention, Dao et al. 2022, §3.1): a running max m and sum l, and the
// output accumulators rescaled by exp(m_old − m_new) whenever a tile raises
// the max. Workgroup memory is the scaled query plus two tiles,
// 4·(MAX_HEAD_DIM + 2·WG + 8) bytes, whatever the length; one pipeline serves
// every batch.
//
// One workgroup per (query token, head), as in attention.wgsl; WG must be a
// power of two (GROUPS divides it). Per tile each invocation scores one key,
// the workgroup finds the tile max, and invocation lid owns output dims lid,
// lid + WG, ... (DPI of them) of the probability-weighted sum of V rows. All
// accumulation is f32, for f16 storage too.
//! param DTYPE: f32 | f16
//! param WG: int
//! param MAX_HEAD_DIM: int
//! param TASKS: true | false
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { tokens: u32, heads: u32, head_dim: u32, hidden: u32, ld_qkv: u32, scale: f32, site_base: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> qkv: array<T>;
@group(0) @binding(2) var<storage, read> key_range: array<u32>; // [tokens, 2]
@group(0) @binding(3) var<storage, read_write> out: array<T>;   // [tokens, hidden]
#if TASKS
// IA³ input scaling of attention.output.dense scales the context: its pool offset is in the row's slot record (lib_slot_record).
@group(0) @binding(4) var<storage, read> row_slot: array<u32>;
@group(0) @binding(5) var<storage, read> slot_table: array<u32>;
@group(0) @binding(6) var<storage, read> pool: array<T>;
#include lib_slot_record
#endif

const WGC = ${WG}u;
// Output dims per invocation.
const DPIC = (${MAX_HEAD_DIM}u + WGC - 1u) / WGC;
var<workgroup> q_scaled: array<f32, ${MAX_HEAD_DIM}>;
// The tile max is found in two levels: GROUPS invocations each take the max of
// GROUP_LEN scores, then every invocation takes the max of those GROUPS. Not
// every invocation scanning the whole tile (paged_attention.wgsl, meant for
// decode's few rows): that is WG·WG work per tile, which an adapter running
// invocations one SIMD group after another pays in full (measured 4-12x
// slower than attention.wgsl at 1100 keys on lavapipe). Not a tree either: it
// costs log2(WG) barriers per tile where this costs one; the two measured
// alike on lavapipe.
const GROUPS = min(8u, WGC);
const GROUP_LEN = WGC / GROUPS;
var<workgroup> s_tile: array<f32, WGC>;
var<workgroup> group_max: array<f32, GROUPS>;
// The tile's probabilities: a separate array, because the scores are still
// being read by the group scans while the first invocations could write them.
var<workgroup> p_tile: array<f32, WGC>;

@compute @workgroup_size(WGC)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x + wg.z * 65535u;
  let h = wg.y;
  // The whole workgroup leaves together and `count` is one value per
  // workgroup, so every barrier below is in uniform control flow.
  if (t >= u.tokens) { return; }
  let start = key_range[t * 2u];
  let count = key_range[t * 2u + 1u];
  let d_head = u.head_dim;
  let q_off = t * u.ld_qkv + h * d_head;
  let k_col = u.hidden + h * d_head;
  let v_col = 2u * u.hidden + h * d_head;

  for (var d = lid.x; d < d_head; d = d + WGC) { q_scaled[d] = f32(qkv[q_off + d]) * u.scale; }
  workgroupBarrier();

  // Finite start, so the first rescale is exp(−3e38 − m) = 0 (on a zero sum and
  // zero accumulators), never exp(−inf + inf) = NaN.
  var run_max = -3.0e38;
  var run_sum = 0.0;
  var acc: array<f32, DPIC>;
  for (var i = 0u; i < DPIC; i = i + 1u) { acc[i] = 0.0; }

  for (var base = 0u; base < count; base = base + WGC) {
    // The last tile of a count that is no multiple of WG is partial.
    let n = min(WGC, count - base);
    var s = -3.0e38;
    if (lid.x < n) {
      let k_off = (start + base + lid.x) * u.ld_qkv + k_col;
      s = 0.0;
      for (var d = 0u; d < d_head; d = d + 1u) { s = s + q_scaled[d] * f32(qkv[k_off + d]); }
    }
    s_tile[lid.x] = s;
    workgroupBarrier();
    if (lid.x < GROUPS) {
      let g0 = lid.x * GROUP_LEN;
      var m = s_tile[g0];
      for (var k = 1u; k < GROUP_LEN; k = k + 1u) { m = max(m, s_tile[g0 + k]); }
      group_max[lid.x] = m;
    }
    workgroupBarrier();
    // Same order everywhere, so every invocation holds the same max.
    var new_max = run_max;
    for (var g = 0u; g < GROUPS; g = g + 1u) { new_max = max(new_max, group_max[g]); }
    // exp(m_old − m_new) ≤ 1 and every p = exp(s − m_new) ≤ 1: nothing can
    // overflow, as in the two-pass form. The result is acc / sum, and both are
    // rescaled by the same factor, so which max they are relative to cancels;
    // the rescales of successive tiles multiply to exp(m_tile − m_final),
    // costing about one rounding per tile that raises the max (~1e-6 relative
    // after a few dozen tiles in f32).
    let rescale = exp(run_max - new_max);
    if (lid.x < n) { p_tile[lid.x] = exp(s - new_max); }
    workgroupBarrier();

    // Only invocations that own output dims walk the tile (head_dim of WG
    // when head_dim < WG): the rest would add WG·keys of empty loop trips.
    if (lid.x < d_head) {
      var tile_sum = 0.0;
      for (var i = 0u; i < DPIC; i = i + 1u) { acc[i] = acc[i] * rescale; }
      for (var k = 0u; k < n; k = k + 1u) {
        let p = p_tile[k];
        tile_sum = tile_sum + p;
        let v_off = (start + base + k) * u.ld_qkv + v_col;
        for (var i = 0u; i < DPIC; i = i + 1u) {
          let d = lid.x + i * WGC;
          if (d < d_head) { acc[i] = acc[i] + p * f32(qkv[v_off + d]); }
        }
      }
      run_sum = run_sum * rescale + tile_sum;
    }
    run_max = new_max;
    // No barrier closes the tile: the next one writes s_tile, last read before
    // the barrier above; group_max and p_tile only after its own first
    // barrier, which every invocation reaches after its reads of this tile.
  }

  // A token with no keys (never made by packedKeyRanges) writes zeros, not 0/0.
  let inv = select(0.0, 1.0 / run_sum, run_sum > 0.0);
#if TASKS
  let scale_off = slot_table[slot_record(u.site_base, row_slot[t]) + SLOT_CONTEXT_SCALE];
#endif
  for (var i = 0u; i < DPIC; i = i + 1u) {
    let d = lid.x + i * WGC;
    if (d < d_head) {
      var o = acc[i] * inv;
#if TASKS
      if (scale_off != NONE) { o = o * f32(pool[scale_off + h * d_head + d]); }
#endif
      out[t * u.hidden + h * d_head + d] = T(o);
    }
  }
}
