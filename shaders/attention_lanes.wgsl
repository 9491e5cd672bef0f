// Multi-head self-attention over PACKED variable-length sequences, one query per invocation.
//
// The resident and online forms give a (query, head) pair a whole workgroup and
// reduce across it through workgroup memory and barriers. On lavapipe a
// workgroup is one CPU thread running its invocations as SIMD lanes, so those
// barriers are coroutine switches and every storage load is a per-lane gather
// (bench/results/load-patterns-*). Here each invocation owns one query token
// of one head, holds its query and output row in registers, and walks the keys
// with an online softmax (Milakov & Gimelshein 2018): no workgroup memory, no
// barrier. The lanes of a subgroup walk the keys together (from the first key
// of any lane's sequence to the last) and split each key's K and V rows: lane
// l loads the row's vec4 chunks l, l + SG, ...; the dot products take every
// chunk from its owner with subgroupShuffle (a register permute on a SIMD CPU).
// A lane outside a key's sequence gives it probability 0.
//
// HEAD_DIM (a multiple of 4) and SG (the adapter's one subgroup size) are
// specialised so the per-row arrays are fixed-size and stay in registers; the
// host offers this form only where the adapter reports a single subgroup size.
//! param DTYPE: f32 | f16
//! param HEAD_DIM: int
//! param SG: int
//! param TASKS: true | false
#if DTYPE == f16
enable f16;
#endif
enable subgroups;
// The key loop's bounds are subgroup-uniform (subgroupMin/Max), which the uniformity analysis cannot see.
diagnostic(off, subgroup_uniformity);
alias T = ${DTYPE};
alias T4 = vec4<${DTYPE}>;

struct Params { tokens: u32, heads: u32, head_dim: u32, hidden: u32, ld_qkv: u32, scale: f32, site_base: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> qkv: array<T4>;
@group(0) @binding(2) var<storage, read> key_range: array<u32>; // [tokens, 2]
@group(0) @binding(3) var<storage, read_write> out: array<T4>;  // [tokens, hidden]
#if TASKS
@group(0) @binding(4) var<storage, read> row_slot: array<u32>;
@group(0) @binding(5) var<storage, read> slot_table: array<u32>;
@group(0) @binding(6) var<storage, read> pool: array<T>;
#include lib_slot_record
#endif

const WGC = 64u;
const D4 = ${HEAD_DIM}u / 4u;
const SGC = ${SG}u;
// vec4 chunks of a K or V row each lane loads.
const R = (D4 + SGC - 1u) / SGC;

@compute @workgroup_size(WGC)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let h = wg.y;
  let t_raw = (wg.x + wg.z * 65535u) * WGC + lid;
  // Invocations past the last token run with the last one and store nothing: all lanes shuffle.
  let t = min(t_raw, u.tokens - 1u);
  let start = key_range[t * 2u];
  let end = start + key_range[t * 2u + 1u];
  let lo = subgroupMin(start);
  let hi = subgroupMax(end);
  let ld4 = u.ld_qkv / 4u;
  let h4 = h * D4;
  let k_col4 = u.hidden / 4u + h4;
  let v_col4 = 2u * u.hidden / 4u + h4;

  var q: array<vec4<f32>, D4>;
  var acc: array<vec4<f32>, D4>;
  for (var c = 0u; c < D4; c = c + 1u) {
    q[c] = vec4<f32>(qkv[t * ld4 + h4 + c]) * u.scale;
    acc[c] = vec4<f32>(0.0);
  }
  var mx = -3.0e38;
  var sum = 0.0;
  var kr: array<vec4<f32>, R>;
  var vr: array<vec4<f32>, R>;
  for (var j = lo; j < hi; j = j + 1u) {
    for (var r = 0u; r < R; r = r + 1u) {
      let c = min(lane + r * SGC, D4 - 1u);
      kr[r] = vec4<f32>(qkv[j * ld4 + k_col4 + c]);
      vr[r] = vec4<f32>(qkv[j * ld4 + v_col4 + c]);
    }
    var s = 0.0;
    for (var c = 0u; c < D4; c = c + 1u) { s = s + dot(q[c], subgroupShuffle(kr[c / SGC], c % SGC)); }
    let mine = j >= start && j < end;
    let m_new = select(mx, max(mx, s), mine);
    let corr = exp(mx - m_new);
    let p = select(0.0, exp(s - m_new), mine);
    sum = sum * corr + p;
    mx = m_new;
    for (var c = 0u; c < D4; c = c + 1u) { acc[c] = acc[c] * corr + p * subgroupShuffle(vr[c / SGC], c % SGC); }
  }
  if (t_raw >= u.tokens) { return; }
  let inv = 1.0 / sum;
#if TASKS
  let scale_off = slot_table[slot_record(u.site_base, row_slot[t]) + SLOT_CONTEXT_SCALE];
#endif
  for (var c = 0u; c < D4; c = c + 1u) {
    var o = acc[c] * inv;
#if TASKS
    // IA³ input scaling of attention.output.dense scales the context (pool offsets need not be multiples of 4).
    if (scale_off != NONE) {
      let p0 = scale_off + h * ${HEAD_DIM}u + 4u * c;
      o = o * vec4<f32>(f32(pool[p0]), f32(pool[p0 + 1u]), f32(pool[p0 + 2u]), f32(pool[p0 + 3u]));
    }
#endif
    out[t * (u.hidden / 4u) + h4 + c] = T4(o);
  }
}
