// Segmented GEMM for segments of FEW rows (decode steps: one or a few rows per
// adapter), Punica's BGMV case. seg_gemm.wgsl puts lanes along rows, so a
// one-row segment leaves most of its workgroup idle; here every lane owns 4
// output columns of one row, and a tile is one (segment, row). Same records,
// same semantics:
//   out[out_off + r·ld_out + n]  (=, or += when ACCUMULATE)  act(scale · Σ_k in[in_off + r·ld_in + k] · W[w_off + n·K + k] + b[n])
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
@group(0) @binding(2) var<storage, read> tiles: array<u32>;   // [tiles][2] = (segment, row)
@group(0) @binding(3) var<storage, read> inp: array<T>;
@group(0) @binding(4) var<storage, read> pool: array<T>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;

const NONE = 0xffffffffu;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tile = u.first_tile + wg.y + wg.z * 65535u;
  if (tile >= u.tiles) { return; }
  let s = tiles[tile * 2u] * 12u;
  let r = tiles[tile * 2u + 1u];
  let K = seg[s + 2u];
  let N = seg[s + 3u];
  let n0 = (wg.x * 64u + lid.x) * 4u;
  if (n0 >= N || r >= seg[s + 1u]) { return; }
  let w_off = seg[s + 4u];
  let b_off = seg[s + 5u];
  let x_off = seg[s + 6u] + r * seg[s + 7u];
  let o_off = seg[s + 8u] + r * seg[s + 9u];
  let scale = bitcast<f32>(seg[s + 10u]);
  let act = seg[s + 11u];  // 0 none, 1 relu, 2 gelu
  let last_n = N - 1u;
  let w0 = w_off + n0 * K;
  let w1 = w_off + min(n0 + 1u, last_n) * K;
  let w2 = w_off + min(n0 + 2u, last_n) * K;
  let w3 = w_off + min(n0 + 3u, last_n) * K;
  var acc = vec4<f32>(0.0);
  for (var k = 0u; k < K; k = k + 1u) {
    let wv = vec4<f32>(f32(pool[w0 + k]), f32(pool[w1 + k]), f32(pool[w2 + k]), f32(pool[w3 + k]));
    acc = acc + f32(inp[x_off + k]) * wv;
  }
  for (var j = 0u; j < 4u; j = j + 1u) {
    let n = n0 + j;
    if (n >= N) { break; }
    var v = acc[j] * scale;
    if (b_off != NONE) { v = v + f32(pool[b_off + n]); }
    if (act == 1u) { v = max(v, 0.0); }
    if (act == 2u) { v = gelu_erf(v); }
    let o = o_off + n;
#if ACCUMULATE
    out[o] = T(f32(out[o]) + v);
#else
    out[o] = T(v);
#endif
  }
}
