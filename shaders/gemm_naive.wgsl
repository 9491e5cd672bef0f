// Simplest correct GEMM: one invocation per output element, no tiling.
// Y[m, n] = sum_k X[m, k] * W[n, k]  (+ bias, act, residual)
// Kept as the baseline the tuned kernel is measured against.
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { M: u32, N: u32, K: u32, ldx: u32, ldy: u32, ldr: u32, site_base: u32, delta_row0: u32, delta_ld: u32, delta_block: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> w: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
#if HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<T>;
#endif
#if RESIDUAL
@group(0) @binding(5) var<storage, read> res: array<T>;
#endif

#include gemm_epilogue

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  let m = gid.y;
  if (m >= u.M || n >= u.N) { return; }
  var acc = 0.0;
  for (var k = 0u; k < u.K; k = k + 1u) {
    acc = acc + f32(x[m * u.ldx + k]) * f32(w[n * u.K + k]);
  }
  epilogue_store(row_task(m), m, n, acc);
}
