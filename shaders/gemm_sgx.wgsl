// Register-blocked GEMM that shares X through subgroup shuffles: Y[m, n] = sum_k X[m, k] * W[n, k] (+ epilogue).
//
// The rb kernel gives every invocation of a row block the same RM rows of X, so
// each X element is loaded once per invocation. On lavapipe an invocation is a
// SIMD lane and every storage load is a per-lane gather, uniform address or not
// (bench/results/load-patterns-*): a row block of eight lanes pays eight loads
// for one X value. Here the lanes of a subgroup split the X loads instead: lane
// l loads the l-th vec4 of the next subgroup_size vec4s of each row (one load per
// lane, distinct addresses), and the K loop takes each vec4 from its owner with
// subgroupShuffle (a register permute on a SIMD CPU, a lane exchange on a GPU).
// Per vec4 of K an invocation then loads CN W vec4s and RM / subgroup_size X
// vec4s instead of CN + RM.
//
// All 64 invocations of a workgroup share one row block (workgroup_id.y) and own
// CN consecutive columns each, so every subgroup, whatever its size, holds lanes
// of one row block; invocations past N clamp their columns and store nothing, so
// control flow stays uniform for the shuffles. Requires K % 4 == 0 (the host
// falls back otherwise) and the `subgroups` feature.
//! param DTYPE: f32 | f16
//! param RM: int
//! param CN: 4 | 8
#if DTYPE == f16
enable f16;
#endif
enable subgroups;
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

@compute @workgroup_size(64)
fn main(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) sg_size: u32,
) {
  // m0 is the same for the whole workgroup: this return keeps control flow uniform.
  let m0 = wg.y * RMC;
  if (m0 >= u.M) { return; }
  let n0 = gid.x * CNC;
  let k4 = u.K / 4u;
  let ldx4 = u.ldx / 4u;
  let last_n = u.N - 1u;
  // Clamped rows/columns read valid memory; their results are computed but never stored.
  var wr: array<u32, CNC>;
  for (var j = 0u; j < CNC; j = j + 1u) { wr[j] = min(n0 + j, last_n) * k4; }
  var xr: array<u32, RMC>;
  for (var i = 0u; i < RMC; i = i + 1u) { xr[i] = min(m0 + i, u.M - 1u) * ldx4; }
  var acc: array<vec4<f32>, RMC>;
  for (var i = 0u; i < RMC; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
#if CN == 8
  var acc_hi: array<vec4<f32>, RMC>;
  for (var i = 0u; i < RMC; i = i + 1u) { acc_hi[i] = vec4<f32>(0.0); }
#endif
  var xl: array<vec4<f32>, RMC>;
  for (var kb = 0u; kb < k4; kb = kb + sg_size) {
    // This lane's share of the next sg_size vec4s of each row (clamped at the end of K).
    let kl = min(kb + lane, k4 - 1u);
    for (var i = 0u; i < RMC; i = i + 1u) { xl[i] = vec4<f32>(x[xr[i] + kl]); }
    let steps = min(sg_size, k4 - kb);
    for (var s = 0u; s < steps; s = s + 1u) {
      let k = kb + s;
      let w0 = vec4<f32>(w[wr[0] + k]);
      let w1 = vec4<f32>(w[wr[1] + k]);
      let w2 = vec4<f32>(w[wr[2] + k]);
      let w3 = vec4<f32>(w[wr[3] + k]);
#if CN == 8
      let w4 = vec4<f32>(w[wr[4] + k]);
      let w5 = vec4<f32>(w[wr[5] + k]);
      let w6 = vec4<f32>(w[wr[6] + k]);
      let w7 = vec4<f32>(w[wr[7] + k]);
#endif
      for (var i = 0u; i < RMC; i = i + 1u) {
        let xv = subgroupShuffle(xl[i], s);
        acc[i] = acc[i] + vec4<f32>(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
#if CN == 8
        acc_hi[i] = acc_hi[i] + vec4<f32>(dot(xv, w4), dot(xv, w5), dot(xv, w6), dot(xv, w7));
#endif
      }
    }
  }
  if (n0 >= u.N) { return; }
  // The stores walk a copy of the accumulators with a runtime row count: LLVM then emits the epilogue
  // (large with TASKS) once instead of RM·CN unrolled copies. Unrolled, an RM = 32 block with the TASKS
  // epilogue took over two minutes to compile on lavapipe; the copy keeps `acc` in registers for the K loop.
  var out: array<vec4<f32>, RMC * (CNC / 4u)>;
  for (var i = 0u; i < RMC; i = i + 1u) {
    out[i * (CNC / 4u)] = acc[i];
#if CN == 8
    out[i * 2u + 1u] = acc_hi[i];
#endif
  }
  let rows = min(RMC, u.M - m0);
  let cols = min(CNC, u.N - n0);
  for (var i = 0u; i < rows; i = i + 1u) {
    let m = m0 + i;
    let rt = row_task(m);
    for (var j = 0u; j < cols; j = j + 1u) {
      epilogue_store(rt, m, n0 + j, out[i * (CNC / 4u) + j / 4u][j % 4u]);
    }
  }
}
