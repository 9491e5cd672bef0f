// Row-wise RMSNorm (Llama, Qwen2, Mistral): y = x / sqrt(mean(x²) + eps) · gamma.
// One workgroup per row (token). As LlamaRMSNorm does, the statistics and the
// normalisation are computed in f32 and x·rstd is rounded to the storage type
// *before* the gamma multiply, so f16 outputs round the way the checkpoint's
// own implementation does. No mean is subtracted, so a single pass of squares
// cannot cancel.
//! param DTYPE: f32 | f16
//! param WG: int
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { rows: u32, dim: u32, eps: f32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> gamma: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;

const WGC = ${WG}u;
var<workgroup> partial: array<f32, WGC>;

@compute @workgroup_size(WGC)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.x + wg.y * 65535u;
  // Whole workgroup leaves together, so barriers stay in uniform control flow.
  if (row >= u.rows) { return; }
  let base = row * u.dim;
  var q = 0.0;
  for (var i = lid.x; i < u.dim; i = i + WGC) {
    let v = f32(x[base + i]);
    q = q + v * v;
  }
  partial[lid.x] = q;
  workgroupBarrier();
  for (var s = WGC / 2u; s > 0u; s = s / 2u) {
    if (lid.x < s) { partial[lid.x] = partial[lid.x] + partial[lid.x + s]; }
    workgroupBarrier();
  }
  let rstd = inverseSqrt(partial[0] / f32(u.dim) + u.eps);
  for (var i = lid.x; i < u.dim; i = i + WGC) {
    let normed = T(f32(x[base + i]) * rstd);
    y[base + i] = T(f32(gamma[i]) * f32(normed));
  }
}
