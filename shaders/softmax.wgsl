// Row-wise softmax, numerically stable (subtract the row max). One workgroup per row.
// Used for classifier probabilities; attention has its own fused softmax.
//! param DTYPE: f32 | f16
//! param WG: int
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { rows: u32, cols: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const WGC = ${WG}u;
var<workgroup> partial: array<f32, WGC>;

@compute @workgroup_size(WGC)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.x + wg.y * 65535u;
  if (row >= u.rows) { return; }
  let base = row * u.cols;
  var mx = -3.0e38;
  for (var i = lid.x; i < u.cols; i = i + WGC) { mx = max(mx, f32(x[base + i])); }
  partial[lid.x] = mx;
  workgroupBarrier();
  for (var s = WGC / 2u; s > 0u; s = s / 2u) {
    if (lid.x < s) { partial[lid.x] = max(partial[lid.x], partial[lid.x + s]); }
    workgroupBarrier();
  }
  mx = partial[0];
  workgroupBarrier();
  var sum = 0.0;
  for (var i = lid.x; i < u.cols; i = i + WGC) { sum = sum + exp(f32(x[base + i]) - mx); }
  partial[lid.x] = sum;
  workgroupBarrier();
  for (var s = WGC / 2u; s > 0u; s = s / 2u) {
    if (lid.x < s) { partial[lid.x] = partial[lid.x] + partial[lid.x + s]; }
    workgroupBarrier();
  }
  let inv = 1.0 / partial[0];
  for (var i = lid.x; i < u.cols; i = i + WGC) { y[base + i] = exp(f32(x[base + i]) - mx) * inv; }
}
