// SwiGLU gate of the Llama-family MLP: y = silu(gate) · up, where each input row
// is the fused gate|up projection [gate (width) | up (width)], so one GEMM
// produces both halves and this kernel reads them side by side.
// One invocation per output element; rows beyond 65535 continue in z.
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { rows: u32, width: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;        // [rows, 2·width]
@group(0) @binding(2) var<storage, read_write> y: array<T>;  // [rows, width]

#include lib_math

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let row = wg.y + wg.z * 65535u;
  let c = gid.x;
  if (row >= u.rows || c >= u.width) { return; }
  let gate = f32(x[row * 2u * u.width + c]);
  let up = f32(x[row * 2u * u.width + u.width + c]);
  y[row * u.width + c] = T(silu_safe(gate) * up);
}
