// Element-wise activation IN PLACE over a [rows, width] block of a wider matrix.
// Used where something must be added between a GEMM and its activation (a
// LoRA delta on GPT-2's c_fc or BLOOM's dense_h_to_4h), so the activation
// cannot be fused into the GEMM's epilogue.
//! param DTYPE: f32 | f16
//! param ACT: gelu_tanh
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};
#include lib_math

struct Params { rows: u32, width: u32, ld: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> x: array<T>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let r = wg.y + wg.z * 65535u;
  let c = gid.x;
  if (r >= u.rows || c >= u.width) { return; }
  let i = r * u.ld + c;
  let v = f32(x[i]);
  // GPT-2's gelu_new: 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))).
  x[i] = T(0.5 * v * (1.0 + tanh_safe(0.7978845608028654 * (v + 0.044715 * v * v * v))));
}
