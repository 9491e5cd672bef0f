// Per-task embedding tables (modules_to_save: embed_tokens): rows of a task
// take their token's row from the task's own table in the PET pool instead of
// the base table (plus the learned position row, GPT-2). One workgroup row
// per (segment, row) tile.
//! param DTYPE: f32 | f16
//! param POSITIONS: true | false
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { tiles: u32, hidden: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> seg: array<u32>;   // [segments][4] = (first row, table offset, 0, 0)
@group(0) @binding(2) var<storage, read> tiles: array<u32>; // [tiles][2] = (segment, row)
@group(0) @binding(3) var<storage, read> token_ids: array<u32>;
@group(0) @binding(4) var<storage, read> pool: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;
#if POSITIONS
@group(0) @binding(6) var<storage, read> positions: array<u32>;
@group(0) @binding(7) var<storage, read> position_table: array<T>;
#endif

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let tile = wg.y + wg.z * 65535u;
  if (tile >= u.tiles) { return; }
  let s = tiles[tile * 2u] * 4u;
  let row = seg[s] + tiles[tile * 2u + 1u];
  let c = gid.x;
  if (c >= u.hidden) { return; }
  var v = f32(pool[seg[s + 1u] + token_ids[row] * u.hidden + c]);
#if POSITIONS
  v = v + f32(position_table[positions[row] * u.hidden + c]);
#endif
  y[row * u.hidden + c] = T(v);
}
