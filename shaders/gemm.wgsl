// Tiled GEMM with register blocking: Y[m, n] = sum_k X[m, k] * W[n, k] (+ epilogue).
// W is [N, K] as torch.nn.Linear stores it, so both operands are read along K.
//
// A 16x16 workgroup computes a 64x64 output tile; each invocation owns a 4x4
// block held in four vec4 accumulators. X and W tiles of BK columns are staged
// in workgroup memory transposed ([k][m], [k][n]) so the inner loop reads
// 4 consecutive rows/cols per operand and does 16 FMAs per 8 loads.
// Accumulation is f32 for both storage types.
//! param DTYPE: f32 | f16
//! param BK: int
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

const BM = 64u;
const BN = 64u;
const BKC = ${BK}u;
const THREADS = 256u;

var<workgroup> tile_x: array<f32, BKC * BM>; // [k][m]
var<workgroup> tile_w: array<f32, BKC * BN>; // [k][n]

@compute @workgroup_size(16, 16)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let m0 = wg.y * BM;
  let n0 = wg.x * BN;
  let tm = lid.y * 4u;
  let tn = lid.x * 4u;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);

  for (var k0 = 0u; k0 < u.K; k0 = k0 + BKC) {
    // Consecutive invocations read consecutive k of one row: coalesced, and
    // out-of-range elements (ragged M, N, K) are staged as zeros.
    for (var i = li; i < BM * BKC; i = i + THREADS) {
      let r = i / BKC;
      let c = i % BKC;
      let gk = k0 + c;
      let gm = m0 + r;
      var xv = 0.0;
      if (gm < u.M && gk < u.K) { xv = f32(x[gm * u.ldx + gk]); }
      tile_x[c * BM + r] = xv;
      let gn = n0 + r;
      var wv = 0.0;
      if (gn < u.N && gk < u.K) { wv = f32(w[gn * u.K + gk]); }
      tile_w[c * BN + r] = wv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BKC; kk = kk + 1u) {
      let xo = kk * BM + tm;
      let wo = kk * BN + tn;
      let a = vec4<f32>(tile_x[xo], tile_x[xo + 1u], tile_x[xo + 2u], tile_x[xo + 3u]);
      let b = vec4<f32>(tile_w[wo], tile_w[wo + 1u], tile_w[wo + 2u], tile_w[wo + 3u]);
      acc0 = fma(vec4<f32>(a.x), b, acc0);
      acc1 = fma(vec4<f32>(a.y), b, acc1);
      acc2 = fma(vec4<f32>(a.z), b, acc2);
      acc3 = fma(vec4<f32>(a.w), b, acc3);
    }
    workgroupBarrier();
  }

  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  for (var i = 0u; i < 4u; i = i + 1u) {
    let m = m0 + tm + i;
    if (m >= u.M) { break; }
    let row = accs[i];
    let rt = row_task(m);
    for (var j = 0u; j < 4u; j = j + 1u) {
      let n = n0 + tn + j;
      if (n < u.N) { epilogue_store(rt, m, n, row[j]); }
    }
  }
}
