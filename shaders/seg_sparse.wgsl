// Segmented sparse delta: ONE dispatch for the diff-pruning and MaskBERT work of all
// tasks at a site. Each segment holds a task's sparse matrix in CSR (row pointers and
// column indices as u32 in the pool) and adds, for its contiguous rows,
//   out[out_off + i·ld_out + n] = Σ_{j ∈ row n} in[in_off + i·ld_in + col_j] · v_j
// where v_j comes from the pool (diff: ΔW values) or, with val_off = NONE, from the
// shared weight (mask: the removed W entries, negated, so Y = X·(W⊙M)ᵀ). It
// writes every (row, column) of its block, so the delta buffer needs no clearing.
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { tiles: u32, first_tile: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> seg: array<u32>;    // [segments][12], see src/kernels/segmented.ts
@group(0) @binding(2) var<storage, read> tiles: array<u32>;  // [tiles][2]
@group(0) @binding(3) var<storage, read> inp: array<T>;
@group(0) @binding(4) var<storage, read> pool: array<T>;
@group(0) @binding(5) var<storage, read> pool_u32: array<u32>; // the same pool buffer, viewed as u32
@group(0) @binding(6) var<storage, read> weight: array<T>;     // shared weight of this site (mask)
@group(0) @binding(7) var<storage, read_write> out: array<T>;

const NONE = 0xffffffffu;
const ROW_LANES = 8u;
const ROWS_PER_LANE = 4u; // 32 rows per tile

// Lanes along x are ROWS of one output column: they share the column's index
// list, so the loop over its non-zeros is uniform (no divergence between lanes
// with different non-zero counts) and each index/value load serves 32 rows.
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
  let ptr_off = seg[s + 4u];
  let idx_off = seg[s + 5u];
  let val_off = seg[s + 6u];
  let w_off = seg[s + 7u];
  let in_off = seg[s + 8u];
  let ld_in = seg[s + 9u];
  let out_off = seg[s + 10u];
  let ld_out = seg[s + 11u];
  let n = wg.x * 8u + lid.y;
  if (n >= N) { return; }
  let last_row = rows - 1u;
  var acc: array<f32, ROWS_PER_LANE>;
  for (var i = 0u; i < ROWS_PER_LANE; i = i + 1u) { acc[i] = 0.0; }
  let begin = pool_u32[ptr_off + n];
  let end = pool_u32[ptr_off + n + 1u];
  for (var j = begin; j < end; j = j + 1u) {
    let col = pool_u32[idx_off + j];
    var v: f32;
    if (val_off != NONE) { v = f32(pool[val_off + j]); } else { v = -f32(weight[w_off + n * K + col]); }
    for (var i = 0u; i < ROWS_PER_LANE; i = i + 1u) {
      // Rows past the segment read its last row (valid memory) and are not stored.
      let r = min(first + lid.x + i * ROW_LANES, last_row);
      acc[i] = acc[i] + f32(inp[in_off + r * ld_in + col]) * v;
    }
  }
  for (var i = 0u; i < ROWS_PER_LANE; i = i + 1u) {
    let r = first + lid.x + i * ROW_LANES;
    if (r >= rows) { break; }
    out[out_off + r * ld_out + n] = T(acc[i]);
  }
}
