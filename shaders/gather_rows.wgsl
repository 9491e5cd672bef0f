// y[r] = x[rows[r]]: picks rows of a packed matrix (e.g. each sequence's [CLS] token for the pooler).
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { count: u32, dim: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> rows: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let r = wg.y;
  let d = gid.x;
  if (r >= u.count || d >= u.dim) { return; }
  y[r * u.dim + d] = x[rows[r] * u.dim + d];
}
