// Register-blocked GEMM without workgroup memory: Y[m, n] = sum_k X[m, k] * W[n, k] (+ epilogue).
//
// Each invocation owns an RM x CN output block and streams its RM rows of X and
// CN rows of W along K as vec4 loads. There is no tile staging and no barrier:
// on CPU-backed adapters (lavapipe runs invocations as SIMD lanes of one CPU
// thread) the caches do the staging and barriers are expensive, so this form
// is the fastest there (bench/results/). Requires K % 4 == 0 (true for every
// BERT linear layer); the host falls back to the tiled kernel otherwise.
//! param DTYPE: f32 | f16
//! param RM: int
//! param CN: 4 | 8
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};
alias T4 = vec4<${DTYPE}>;

struct Params { M: u32, N: u32, K: u32, ldx: u32, ldy: u32, ldr: u32, site_base: u32, delta_row0: u32, delta_ld: u32, delta_block: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<T4>;
@group(0) @binding(2) var<storage, read> w: array<T4>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
#if HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<T>;
#endif
#if RESIDUAL
@group(0) @binding(5) var<storage, read> res: array<T>;
#endif

#include gemm_epilogue

const RMC = ${RM}u;
const CNC = ${CN}u;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n0 = gid.x * CNC;
  let m0 = gid.y * RMC;
  if (m0 >= u.M || n0 >= u.N) { return; }
  let k4 = u.K / 4u;
  let ldx4 = u.ldx / 4u;
  // Clamp row indices so ragged edges read valid memory; results of clamped
  // rows/cols are computed but never stored.
  let last_n = u.N - 1u;
  let wr0 = n0 * k4;
  let wr1 = min(n0 + 1u, last_n) * k4;
  let wr2 = min(n0 + 2u, last_n) * k4;
  let wr3 = min(n0 + 3u, last_n) * k4;
  var acc: array<vec4<f32>, RMC>;
  for (var i = 0u; i < RMC; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
#if CN == 8
  let wr4 = min(n0 + 4u, last_n) * k4;
  let wr5 = min(n0 + 5u, last_n) * k4;
  let wr6 = min(n0 + 6u, last_n) * k4;
  let wr7 = min(n0 + 7u, last_n) * k4;
  var acc_hi: array<vec4<f32>, RMC>;
  for (var i = 0u; i < RMC; i = i + 1u) { acc_hi[i] = vec4<f32>(0.0); }
#endif
  for (var k = 0u; k < k4; k = k + 1u) {
    let w0 = vec4<f32>(w[wr0 + k]);
    let w1 = vec4<f32>(w[wr1 + k]);
    let w2 = vec4<f32>(w[wr2 + k]);
    let w3 = vec4<f32>(w[wr3 + k]);
#if CN == 8
    let w4 = vec4<f32>(w[wr4 + k]);
    let w5 = vec4<f32>(w[wr5 + k]);
    let w6 = vec4<f32>(w[wr6 + k]);
    let w7 = vec4<f32>(w[wr7 + k]);
#endif
    for (var i = 0u; i < RMC; i = i + 1u) {
      let m = min(m0 + i, u.M - 1u);
      let xv = vec4<f32>(x[m * ldx4 + k]);
      acc[i] = acc[i] + vec4<f32>(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
#if CN == 8
      acc_hi[i] = acc_hi[i] + vec4<f32>(dot(xv, w4), dot(xv, w5), dot(xv, w6), dot(xv, w7));
#endif
    }
  }
  for (var i = 0u; i < RMC; i = i + 1u) {
    let m = m0 + i;
    if (m >= u.M) { break; }
    let rt = row_task(m);
    for (var j = 0u; j < 4u; j = j + 1u) {
      if (n0 + j < u.N) { epilogue_store(rt, m, n0 + j, acc[i][j]); }
    }
#if CN == 8
    for (var j = 0u; j < 4u; j = j + 1u) {
      if (n0 + 4u + j < u.N) { epilogue_store(rt, m, n0 + 4u + j, acc_hi[i][j]); }
    }
#endif
  }
}
