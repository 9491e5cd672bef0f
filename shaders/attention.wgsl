// Multi-head self-attention over PACKED variable-length sequences.
//
// Tokens of all sequences lie end to end in qkv ([tokens, 3·hidden], columns
// q | k | v, head h at h·head_dim). key_range[t] = (first key row, key count)
// of token t's sequence, so a query only sees keys of its own sequence and no
// padding is ever computed. A padded layout is the same call with every
// sequence padded to the same length and key count = the real length (that is
// what the benchmark compares against).
//
// One workgroup per (query token, head): scores for all keys in workgroup
// memory, stable softmax (max-subtracted, f32), then each invocation produces
// output dimensions as the probability-weighted sum of V rows.
//! param DTYPE: f32 | f16
//! param WG: int
//! param MAX_KEYS: int
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
var<workgroup> scores: array<f32, ${MAX_KEYS}>;
var<workgroup> q_scaled: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> partial: array<f32, WGC>;

@compute @workgroup_size(WGC)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x + wg.z * 65535u;
  let h = wg.y;
  if (t >= u.tokens) { return; }
  let start = key_range[t * 2u];
  let count = key_range[t * 2u + 1u];
  let d_head = u.head_dim;
  let q_off = t * u.ld_qkv + h * d_head;
  let k_col = u.hidden + h * d_head;
  let v_col = 2u * u.hidden + h * d_head;

  for (var d = lid.x; d < d_head; d = d + WGC) { q_scaled[d] = f32(qkv[q_off + d]) * u.scale; }
  workgroupBarrier();

  var mx = -3.0e38;
  for (var j = lid.x; j < count; j = j + WGC) {
    let k_off = (start + j) * u.ld_qkv + k_col;
    var s = 0.0;
    for (var d = 0u; d < d_head; d = d + 1u) { s = s + q_scaled[d] * f32(qkv[k_off + d]); }
    scores[j] = s;
    mx = max(mx, s);
  }
  partial[lid.x] = mx;
  workgroupBarrier();
  for (var s = WGC / 2u; s > 0u; s = s / 2u) {
    if (lid.x < s) { partial[lid.x] = max(partial[lid.x], partial[lid.x + s]); }
    workgroupBarrier();
  }
  mx = partial[0];
  workgroupBarrier();

  var sum = 0.0;
  for (var j = lid.x; j < count; j = j + WGC) {
    let e = exp(scores[j] - mx);
    scores[j] = e;
    sum = sum + e;
  }
  partial[lid.x] = sum;
  workgroupBarrier();
  for (var s = WGC / 2u; s > 0u; s = s / 2u) {
    if (lid.x < s) { partial[lid.x] = partial[lid.x] + partial[lid.x + s]; }
    workgroupBarrier();
  }
  let inv = 1.0 / partial[0];

#if TASKS
  let scale_off = slot_table[slot_record(u.site_base, row_slot[t]) + SLOT_CONTEXT_SCALE];
#endif
  for (var d = lid.x; d < d_head; d = d + WGC) {
    var acc = 0.0;
    for (var j = 0u; j < count; j = j + 1u) {
      acc = acc + scores[j] * f32(qkv[(start + j) * u.ld_qkv + v_col + d]);
    }
    var o = acc * inv;
#if TASKS
    if (scale_off != NONE) { o = o * f32(pool[scale_off + h * d_head + d]); }
#endif
    out[t * u.hidden + h * d_head + d] = T(o);
  }
}
