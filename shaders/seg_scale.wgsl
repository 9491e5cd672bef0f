// Segmented column scaling IN PLACE (IA³): for each segment s (a run of rows of
// one task), x[row, col0 + c] *= pool[scale_off + c] for c < width. One
// workgroup row per (segment, row) tile; segments of different tasks, widths
// and column offsets share one dispatch, like the segmented GEMMs.
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { tiles: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> seg: array<u32>;   // [segments][4] = (first element, width, row stride, scale offset)
@group(0) @binding(2) var<storage, read> tiles: array<u32>; // [tiles][2] = (segment, row)
@group(0) @binding(3) var<storage, read> pool: array<T>;
@group(0) @binding(4) var<storage, read_write> x: array<T>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let tile = wg.y + wg.z * 65535u;
  if (tile >= u.tiles) { return; }
  let s = tiles[tile * 2u] * 4u;
  let row = tiles[tile * 2u + 1u];
  let c = gid.x;
  let width = seg[s + 1u];
  if (c >= width) { return; }
  let i = seg[s] + row * seg[s + 2u] + c;
  x[i] = T(f32(x[i]) * f32(pool[seg[s + 3u] + c]));
}
