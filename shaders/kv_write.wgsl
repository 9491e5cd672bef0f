// Appends this step's keys and values to a layer's paged KV cache.
//
// The cache is vLLM's paged layout: k_cache and v_cache are [slots, kv_width]
// with slot = block·block_tokens + offset, token-major inside a block, so one
// token's k (or v) for all kv heads is one contiguous row. slot_mapping gives
// each qkv row its slot; NO_SLOT marks rows that must not be cached (padding,
// or tokens whose k/v are already there).
// One invocation per (row, column); rows beyond 65535 continue in z.
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { tokens: u32, kv_width: u32, ld_qkv: u32, k_col: u32, v_col: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> qkv: array<T>;
@group(0) @binding(2) var<storage, read> slot_mapping: array<u32>; // [tokens]
@group(0) @binding(3) var<storage, read_write> k_cache: array<T>;  // [slots, kv_width]
@group(0) @binding(4) var<storage, read_write> v_cache: array<T>;  // [slots, kv_width]

const NO_SLOT = 0xffffffffu;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let t = wg.y + wg.z * 65535u;
  let c = gid.x;
  if (t >= u.tokens || c >= u.kv_width) { return; }
  let slot = slot_mapping[t];
  if (slot == NO_SLOT) { return; }
  let src = t * u.ld_qkv;
  k_cache[slot * u.kv_width + c] = qkv[src + u.k_col + c];
  v_cache[slot * u.kv_width + c] = qkv[src + u.v_col + c];
}
