// Segmented GEMM: ONE dispatch for many small per-task GEMMs (SGMV-style).
// Each segment s is a run of contiguous rows with its own weight in the PET pool:
//   out[out_off + i·ld_out + n]  (=, or += when ACCUMULATE)  act(scale · Σ_k in[in_off + i·ld_in + k] · W[w_off + n·K + k] + b[n])
// for i < rows, n < N. Used for LoRA shrink (X·Aᵀ) and expand (+= s·U·Bᵀ), adapter
// down (act(h·W_dᵀ + b_d)) and up (+= U·W_uᵀ + b_u), and per-task classifier heads.
// Ranks/widths differ per segment and are never padded to a common maximum: the
// tile table lists (segment, first row) per workgroup row, and column tiles past a
// segment's N exit at once.
//! param DTYPE: f32 | f16
//! param ACCUMULATE: true | false
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};
#include lib_math

struct Params { tiles: u32, first_tile: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> seg: array<u32>;     // [segments][12], see src/kernels/segmented.ts
@group(0) @binding(2) var<storage, read> tiles: array<u32>;   // [tiles][2] = (segment, first row)
@group(0) @binding(3) var<storage, read> inp: array<T>;
@group(0) @binding(4) var<storage, read> pool: array<T>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;

const NONE = 0xffffffffu;
const RM = 4u;          // rows per invocation
const ROWS_PER_TILE = 32u; // 8 invocations × RM

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  // first_tile > 0 when one dispatch covers a single segment's window of the tile table.
  let tile = u.first_tile + wg.y + wg.z * 65535u;
  if (tile >= u.tiles) { return; }
  let s = tiles[tile * 2u] * 12u;
  let first = tiles[tile * 2u + 1u];
  let rows = seg[s + 1u];
  let K = seg[s + 2u];
  let N = seg[s + 3u];
  let w_off = seg[s + 4u];
  let b_off = seg[s + 5u];
  let in_off = seg[s + 6u];
  let ld_in = seg[s + 7u];
  let out_off = seg[s + 8u];
  let ld_out = seg[s + 9u];
  let scale = bitcast<f32>(seg[s + 10u]);
  let act = seg[s + 11u];  // 0 none, 1 relu, 2 gelu

  // Lanes along x are ROWS (r = first + lid.x + 8·i), lanes along y own 4 columns:
  // small N (LoRA ranks, label counts) then still fills every SIMD lane.
  let n0 = (wg.x * 8u + lid.y) * 4u;
  let r0 = first + lid.x;
  if (n0 >= N || r0 >= rows) { return; }
  let last_n = N - 1u;
  var acc: array<vec4<f32>, RM>;
  for (var i = 0u; i < RM; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
  let w0 = w_off + n0 * K;
  let w1 = w_off + min(n0 + 1u, last_n) * K;
  let w2 = w_off + min(n0 + 2u, last_n) * K;
  let w3 = w_off + min(n0 + 3u, last_n) * K;
  // Rows this invocation owns (r0, r0+8, ...): a short segment (a few decode rows of
  // one adapter) must not pay for RM clamped duplicate rows in its K loop.
  let own = min(RM, (rows - r0 + 7u) / 8u);
  for (var k = 0u; k < K; k = k + 1u) {
    let wv = vec4<f32>(f32(pool[w0 + k]), f32(pool[w1 + k]), f32(pool[w2 + k]), f32(pool[w3 + k]));
    for (var i = 0u; i < own; i = i + 1u) {
      acc[i] = acc[i] + f32(inp[in_off + (r0 + i * 8u) * ld_in + k]) * wv;
    }
  }
  for (var i = 0u; i < RM; i = i + 1u) {
    let r = r0 + i * 8u;
    if (r >= rows) { break; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let n = n0 + j;
      if (n >= N) { break; }
      var v = acc[i][j] * scale;
      if (b_off != NONE) { v = v + f32(pool[b_off + n]); }
      if (act == 1u) { v = max(v, 0.0); }
      if (act == 2u) { v = gelu_erf(v); }
      let o = out_off + r * ld_out + n;
#if ACCUMULATE
      out[o] = T(f32(out[o]) + v);
#else
      out[o] = T(v);
#endif
    }
  }
}
