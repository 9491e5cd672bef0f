// Epilogue shared by the GEMM kernels:
//   v = acc + bias            (task's own bias when its slot overrides it: BitFit, diff Δb)
//   v += delta                (rows whose task has an X-derived delta in this column block: LoRA, diff, mask)
//   v *= pre_scale            (IA³ output scaling)
//   v = act(v)
//   v *= post_scale           (IA³ input scaling of the *next* linear, e.g. FFN input)
//   v += residual
// Per-task values are found through the row's slot record (lib_slot_record): it
// holds pool offsets (0xffffffff = none) and a bit mask of the column blocks (width
// u.delta_block: q | k | v of the fused QKV GEMM) whose delta was written. Blocks
// without a bit are never read, so the delta buffer needs no clearing.
// Kernels know slots, not tasks.
//! param HAS_BIAS: true | false
//! param ACT: none | gelu | gelu_tanh | tanh
//! param RESIDUAL: true | false
//! param TASKS: true | false
#include lib_math

#if TASKS
@group(0) @binding(6) var<storage, read> row_slot: array<u32>;
@group(0) @binding(7) var<storage, read> slot_table: array<u32>;
@group(0) @binding(8) var<storage, read> pool: array<T>;
@group(0) @binding(9) var<storage, read> delta: array<T>;
#include lib_slot_record
#endif

// A row's task record, read once per output row (not once per element).
struct RowTask { bias_off: u32, pre_off: u32, post_off: u32, delta_blocks: u32 }

fn row_task(m: u32) -> RowTask {
#if TASKS
  let rec = slot_record(u.site_base, row_slot[m]);
  return RowTask(slot_table[rec + SLOT_BIAS], slot_table[rec + SLOT_PRE_SCALE], slot_table[rec + SLOT_POST_SCALE], slot_table[rec + SLOT_DELTA_BLOCKS]);
#else
  return RowTask(0u, 0u, 0u, 0u);
#endif
}

fn epilogue_store(rt: RowTask, m: u32, n: u32, acc: f32) {
  var v = acc;
#if TASKS
  let bias_off = rt.bias_off;
  let pre_off = rt.pre_off;
  let post_off = rt.post_off;
#if HAS_BIAS
  if (bias_off != NONE) { v = v + f32(pool[bias_off + n]); } else { v = v + f32(bias[n]); }
#endif
  let delta_blocks = rt.delta_blocks;
  if (delta_blocks != 0u && ((delta_blocks >> (n / u.delta_block)) & 1u) != 0u) {
    v = v + f32(delta[(m - u.delta_row0) * u.delta_ld + n]);
  }
  if (pre_off != NONE) { v = v * f32(pool[pre_off + n]); }
#else
#if HAS_BIAS
  v = v + f32(bias[n]);
#endif
#endif
#if ACT == gelu
  v = gelu_erf(v);
#endif
#if ACT == gelu_tanh
  v = gelu_tanh(v);
#endif
#if ACT == tanh
  v = tanh_safe(v);
#endif
#if TASKS
  if (post_off != NONE) { v = v * f32(pool[post_off + n]); }
#endif
#if RESIDUAL
  v = v + f32(res[m * u.ldr + n]);
#endif
  y[m * u.ldy + n] = T(v);
}
