// out[offset + i] = 0 for i < count (clears PET delta rows before they accumulate).
//! param DTYPE: f32 | f16
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params { offset: u32, count: u32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < u.count) { out[u.offset + i] = T(0.0); }
}
