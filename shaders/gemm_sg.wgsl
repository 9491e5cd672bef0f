// Subgroup GEMM for few rows (decode steps, M <= 16): Y[m, n] = sum_k X[m, k] * W[n, k] (+ epilogue).
//
// With a handful of rows there is nothing to block along M: the rb kernel then
// runs M·N/CN invocations, each with a K-long serial loop (128 invocations for
// one row of 1024 outputs, far too few to fill a GPU). Here a workgroup owns CB
// output columns of RPW rows and splits K across its WG invocations instead:
// each accumulates a partial dot product over a strided K slice, loading each W
// value once for all RPW rows. subgroupAdd sums the partials within each
// subgroup, workgroup memory across the workgroup's subgroups.
//
// Nothing assumes a subgroup size (WGSL allows 4..128; lavapipe's follows the
// CPU's vector width) or how subgroups map onto local_invocation_index: each
// subgroup's elected invocation stores its sums under its own
// local_invocation_index and flags that index in a bit mask; the final sum walks
// the flagged indices in increasing order, so it is as deterministic as the
// subgroup partition itself (an atomic slot counter would sum in arrival order).
//
// VEC 4: K and ldx are multiples of 4, X and W are read as vec4. VEC 1: scalar
// loads for any K (the host picks).
//! param DTYPE: f32 | f16
//! param RPW: int
//! param VEC: 4 | 1
#if DTYPE == f16
enable f16;
#endif
enable subgroups;
alias T = ${DTYPE};
#if VEC == 4
alias TV = vec4<${DTYPE}>;
alias FV = vec4<f32>;
#else
alias TV = ${DTYPE};
alias FV = f32;
#endif

struct Params { M: u32, N: u32, K: u32, ldx: u32, ldy: u32, ldr: u32, site_base: u32, delta_row0: u32, delta_ld: u32, delta_block: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<TV>;
@group(0) @binding(2) var<storage, read> w: array<TV>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
#if HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<T>;
#endif
#if RESIDUAL
@group(0) @binding(5) var<storage, read> res: array<T>;
#endif

#include gemm_epilogue

// 64 invocations: two subgroups on 32-wide GPUs, eight on 8-wide lavapipe; K
// slices of 256 elements per step in the vec4 form. CB = 4 columns keep four W
// streams in flight per invocation and pack one row's column sums into a vec4,
// so each row costs one subgroupAdd.
const WG = 64u;
const CB = 4u;
const RPWC = ${RPW}u;
const VECC = ${VEC}u;
// The final step gives each output of the block its own invocation, and `sums`
// (WG · RPW vec4) stays within the 16 KiB of workgroup memory WebGPU guarantees.
const_assert RPWC * CB <= WG;
const_assert RPWC <= 8u;

// [local_invocation_index of a subgroup's elected invocation][row]: that subgroup's CB column sums.
var<workgroup> sums: array<vec4<f32>, WG * RPWC>;
// Bit i set: sums[i][..] holds a subgroup's sums.
var<workgroup> elected: array<atomic<u32>, WG / 32u>;

// One invocation's partial dot product over its K slice, before the subgroup sum.
fn lane_total(v: FV) -> f32 {
#if VEC == 4
  return dot(v, vec4<f32>(1.0));
#else
  return v;
#endif
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n0 = wg.x * CB;
  let m0 = wg.y * RPWC;
  // Explicitly cleared: workgroup memory is not zeroed under Dawn's disable_workgroup_init toggle.
  if (lid < WG / 32u) { atomicStore(&elected[lid], 0u); }
  workgroupBarrier();

  let kv = u.K / VECC;
  let ldxv = u.ldx / VECC;
  // Clamp column and row indices so ragged edges read valid memory; sums of
  // clamped columns/rows are computed but never stored.
  let last_n = u.N - 1u;
  let wr0 = n0 * kv;
  let wr1 = min(n0 + 1u, last_n) * kv;
  let wr2 = min(n0 + 2u, last_n) * kv;
  let wr3 = min(n0 + 3u, last_n) * kv;
  // f32 accumulation for f16 too: a decode GEMM sums K products of which f16 would keep ~11 bits.
  var acc: array<array<FV, CB>, RPWC>;
  for (var r = 0u; r < RPWC; r = r + 1u) {
    for (var c = 0u; c < CB; c = c + 1u) { acc[r][c] = FV(0.0); }
  }
  // Consecutive invocations read consecutive elements of a row: coalesced on GPUs, one cache line per subgroup on lavapipe.
  for (var k = lid; k < kv; k = k + WG) {
    let w0 = FV(w[wr0 + k]);
    let w1 = FV(w[wr1 + k]);
    let w2 = FV(w[wr2 + k]);
    let w3 = FV(w[wr3 + k]);
    for (var r = 0u; r < RPWC; r = r + 1u) {
      let xv = FV(x[min(m0 + r, u.M - 1u) * ldxv + k]);
      acc[r][0] = acc[r][0] + xv * w0;
      acc[r][1] = acc[r][1] + xv * w1;
      acc[r][2] = acc[r][2] + xv * w2;
      acc[r][3] = acc[r][3] + xv * w3;
    }
  }

  // subgroupElect, not subgroup_invocation_id == 0: exactly one active invocation per subgroup by definition.
  let leader = subgroupElect();
  for (var r = 0u; r < RPWC; r = r + 1u) {
    let lane = vec4<f32>(lane_total(acc[r][0]), lane_total(acc[r][1]), lane_total(acc[r][2]), lane_total(acc[r][3]));
    let subgroup_sum = subgroupAdd(lane);
    if (leader) { sums[lid * RPWC + r] = subgroup_sum; }
  }
  if (leader) { atomicOr(&elected[lid / 32u], 1u << (lid % 32u)); }
  workgroupBarrier();

  if (lid >= RPWC * CB) { return; }
  let r = lid / CB;
  let c = lid % CB;
  let m = m0 + r;
  let n = n0 + c;
  if (m >= u.M || n >= u.N) { return; }
  var total = 0.0;
  for (var word = 0u; word < WG / 32u; word = word + 1u) {
    var bits = atomicLoad(&elected[word]);
    while (bits != 0u) {
      let i = word * 32u + firstTrailingBit(bits);
      total = total + sums[i * RPWC + r][c];
      bits = bits & (bits - 1u);
    }
  }
  // row_task once per output, but in parallel: the block's CB invocations of a row read the same record.
  epilogue_store(row_task(m), m, n, total);
}
