// BERT embeddings before LayerNorm: y[t] = word[id_t] + position[pos_t] + token_type[type_t].
// token_table holds per token (id, position, type), so packed and padded
// layouts use the same kernel; ids were range-checked on the host.
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { tokens: u32, hidden: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> token_table: array<u32>; // [tokens, 3]
@group(0) @binding(2) var<storage, read> word: array<T>;
@group(0) @binding(3) var<storage, read> position: array<T>;
@group(0) @binding(4) var<storage, read> token_type: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let t = wg.y + wg.z * 65535u;
  let h = gid.x;
  if (t >= u.tokens || h >= u.hidden) { return; }
  let id = token_table[t * 3u];
  let pos = token_table[t * 3u + 1u];
  let typ = token_table[t * 3u + 2u];
  let v = f32(word[id * u.hidden + h]) + f32(position[pos * u.hidden + h]) + f32(token_type[typ * u.hidden + h]);
  y[t * u.hidden + h] = T(v);
}
