// Row-wise LayerNorm with optional fused residual: y = LN(x (+ r)) * gamma + beta.
// One workgroup per row (token). Two-pass statistics (mean, then the mean of
// squared deviations) in f32, as torch does, rather than E[x²]−E[x]², which
// cancels badly when |mean| >> std.
//! param DTYPE: f32 | f16
//! param WG: int
//! param RESIDUAL: true | false
//! param TASKS: true | false
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { rows: u32, dim: u32, eps: f32, site_base: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> gamma: array<T>;
@group(0) @binding(3) var<storage, read> beta: array<T>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;
#if RESIDUAL
@group(0) @binding(5) var<storage, read> res: array<T>;
#endif
#if TASKS
// BitFit tasks bring their own gamma/beta: pool offsets in the row's slot record (lib_slot_record).
@group(0) @binding(6) var<storage, read> row_slot: array<u32>;
@group(0) @binding(7) var<storage, read> slot_table: array<u32>;
@group(0) @binding(8) var<storage, read> pool: array<T>;
#include lib_slot_record
#endif

const WGC = ${WG}u;
var<workgroup> partial: array<f32, WGC>;

fn load(i: u32) -> f32 {
#if RESIDUAL
  return f32(x[i]) + f32(res[i]);
#else
  return f32(x[i]);
#endif
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var s = WGC / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { partial[lid] = partial[lid] + partial[lid + s]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(WGC)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.x + wg.y * 65535u;
  // Whole workgroup leaves together, so barriers stay in uniform control flow.
  if (row >= u.rows) { return; }
  let base = row * u.dim;
  var s = 0.0;
  for (var i = lid.x; i < u.dim; i = i + WGC) { s = s + load(base + i); }
  let mean = reduce_sum(lid.x, s) / f32(u.dim);
  var q = 0.0;
  for (var i = lid.x; i < u.dim; i = i + WGC) {
    let d = load(base + i) - mean;
    q = q + d * d;
  }
  let rstd = inverseSqrt(reduce_sum(lid.x, q) / f32(u.dim) + u.eps);
#if TASKS
  let rec = slot_record(u.site_base, row_slot[row]);
  let g_off = slot_table[rec + SLOT_GAMMA];
  let b_off = slot_table[rec + SLOT_BETA];
  for (var i = lid.x; i < u.dim; i = i + WGC) {
    var g = f32(gamma[i]);
    var b = f32(beta[i]);
    if (g_off != NONE) { g = f32(pool[g_off + i]); }
    if (b_off != NONE) { b = f32(pool[b_off + i]); }
    y[base + i] = T((load(base + i) - mean) * rstd * g + b);
  }
#else
  for (var i = lid.x; i < u.dim; i = i + WGC) {
    y[base + i] = T((load(base + i) - mean) * rstd * f32(gamma[i]) + f32(beta[i]));
  }
#endif
}
