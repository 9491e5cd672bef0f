// Rotary position embedding, in place on the q and k blocks of a fused qkv row.
//
// Hugging Face's "rotate_half" convention (Llama, Qwen2, Mistral, GPT-NeoX):
// within the first rotary_dims dims of a head, dim i pairs with dim
// i + rotary_dims/2 (not with i + 1 as in the GPT-J / Meta original layout),
//   out[i]        = x[i]·cos − x[i + half]·sin
//   out[i + half] = x[i + half]·cos + x[i]·sin,   angle = position · inv_freq[i].
// Dims past rotary_dims (partial rotary) are left as they are.
//
// One invocation per (token, head, pair): it reads both elements of its pair
// before writing them, and no two invocations share an element, so the update
// in place needs no barrier. The q block holds heads 0..num_heads-1 and the k
// block follows it directly, so both are "head index < num_heads + num_kv_heads".
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { tokens: u32, heads: u32, head_dim: u32, half_rotary: u32, ld_qkv: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> qkv: array<T>;
@group(0) @binding(2) var<storage, read> positions: array<u32>; // [tokens]
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;  // [half_rotary]

// 2π split Cody–Waite style: HI and MID have 9 significant bits, so k·HI and
// k·MID are exact for k < 2^15 and the reduced angle keeps f32 accuracy up to
// |angle| ≈ 2^15·2π ≈ 2e5 rad (position 200k at inv_freq 1). Builtin sin/cos
// are only specified on [−π, π] and lose digits far outside it on some GPUs.
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_MID: f32 = 0.001934051513671875;
const TWO_PI_LO: f32 = 1.2556658930407139e-06;
const INV_TWO_PI: f32 = 0.15915494309189535;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
  let t = wg.y + wg.z * 65535u;
  let pair = gid.x;
  if (t >= u.tokens || pair >= u.heads * u.half_rotary) { return; }
  let head = pair / u.half_rotary;
  let i = pair % u.half_rotary;
  // The angle is rounded to f32 exactly as HF's float32 `inv_freq @ position_ids` is.
  let angle = f32(positions[t]) * inv_freq[i];
  let k = round(angle * INV_TWO_PI);
  let r = ((angle - k * TWO_PI_HI) - k * TWO_PI_MID) - k * TWO_PI_LO;
  let c = cos(r);
  let s = sin(r);
  let at = t * u.ld_qkv + head * u.head_dim + i;
  let x1 = f32(qkv[at]);
  let x2 = f32(qkv[at + u.half_rotary]);
  qkv[at] = T(x1 * c - x2 * s);
  qkv[at + u.half_rotary] = T(x2 * c + x1 * s);
}
