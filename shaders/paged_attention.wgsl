// Decoder attention of query rows against a layer's paged KV cache (vLLM's
// layout, see kv_write.wgsl), for prefill chunks and decode steps alike.
//
// Row t belongs to sequence row_info[t].x and sees keys 0..row_info[t].y − 1
// of it: causality is the visible count, because the engine writes the k/v of
// every row of a step before attending. Key j of a sequence lives at slot
// block_tables[seq·max_blocks + j / block_tokens]·block_tokens + j % block_tokens.
// Grouped-query attention: query head h reads kv head h / group.
//
// One workgroup per (row, head). Keys are visited in chunks of WG with an
// online softmax (Milakov & Gimelshein 2018; FlashAttention / flash-decoding):
// a running max m and sum l, and the output accumulators rescaled by
// exp(m_old − m_new) whenever the max grows. Workgroup memory is one chunk, so
// the context length is unbounded. Each invocation scores one key of a chunk,
// then owns output dims lid, lid + WG, ... (DPI of them) of the weighted sum.
//
// ALiBi adds slope_h·(j − (visible − 1)): HF BLOOM adds slope_h·j, and the two
// differ by a constant per row, which softmax cancels; this form keeps the bias
// ≤ 0 and small near the query, where the f32 scores need their precision.
//! param DTYPE: f32 | f16
//! param WG: int
//! param DPI: int
//! param ALIBI: true | false
#if DTYPE == f16
enable f16;
#endif
alias T = ${DTYPE};

struct Params {
  tokens: u32,
  heads: u32,
  head_dim: u32,
  kv_width: u32,
  group: u32,
  ld_qkv: u32,
  max_blocks: u32,
  block_tokens: u32,
  scale: f32,
}
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> qkv: array<T>;
@group(0) @binding(2) var<storage, read> k_cache: array<T>;         // [slots, kv_width]
@group(0) @binding(3) var<storage, read> v_cache: array<T>;         // [slots, kv_width]
@group(0) @binding(4) var<storage, read> row_info: array<u32>;      // [tokens, 2]: sequence, visible keys
@group(0) @binding(5) var<storage, read> block_tables: array<u32>;  // [sequences, max_blocks]
@group(0) @binding(6) var<storage, read_write> out: array<T>;       // [tokens, heads·head_dim]
#if ALIBI
@group(0) @binding(7) var<storage, read> alibi_slopes: array<f32>;  // [heads]
#endif

const WGC = ${WG}u;
const DPIC = ${DPI}u;
var<workgroup> q_scaled: array<f32, WGC * DPIC>;
// One chunk's scores, probabilities, and where each key's row starts in the cache.
var<workgroup> s_chunk: array<f32, WGC>;
var<workgroup> p_chunk: array<f32, WGC>;
var<workgroup> kv_off: array<u32, WGC>;

@compute @workgroup_size(WGC)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x + wg.z * 65535u;
  let h = wg.y;
  // Whole workgroup leaves together, and `visible` is one value per workgroup,
  // so every barrier below is in uniform control flow.
  if (t >= u.tokens) { return; }
  let seq = row_info[t * 2u];
  let visible = row_info[t * 2u + 1u];
  let d_head = u.head_dim;
  let head_col = (h / u.group) * d_head;
  let table = seq * u.max_blocks;

  for (var d = lid.x; d < d_head; d = d + WGC) {
    q_scaled[d] = f32(qkv[t * u.ld_qkv + h * d_head + d]) * u.scale;
  }
#if ALIBI
  let slope = alibi_slopes[h];
#endif
  workgroupBarrier();

  // Finite start so the first rescale is exp(−huge) = 0, never exp(−inf + inf).
  var run_max = -3.0e38;
  var run_sum = 0.0;
  var acc: array<f32, DPIC>;
  for (var i = 0u; i < DPIC; i = i + 1u) { acc[i] = 0.0; }

  for (var base = 0u; base < visible; base = base + WGC) {
    let n = min(WGC, visible - base);
    if (lid.x < n) {
      let j = base + lid.x;
      let block = block_tables[table + j / u.block_tokens];
      let off = (block * u.block_tokens + j % u.block_tokens) * u.kv_width + head_col;
      var s = 0.0;
      for (var d = 0u; d < d_head; d = d + 1u) { s = s + q_scaled[d] * f32(k_cache[off + d]); }
#if ALIBI
      s = s + slope * (f32(j) - f32(visible - 1u));
#endif
      s_chunk[lid.x] = s;
      kv_off[lid.x] = off;
    }
    workgroupBarrier();
    // Every invocation scans the chunk's scores itself: one barrier instead of
    // a tree reduction's log2(WG), and barriers are what CPU adapters pay for
    // (gemm_rb.wgsl).
    var new_max = run_max;
    for (var k = 0u; k < n; k = k + 1u) { new_max = max(new_max, s_chunk[k]); }
    let rescale = exp(run_max - new_max);
    if (lid.x < n) { p_chunk[lid.x] = exp(s_chunk[lid.x] - new_max); }
    workgroupBarrier();

    var chunk_sum = 0.0;
    for (var i = 0u; i < DPIC; i = i + 1u) { acc[i] = acc[i] * rescale; }
    for (var k = 0u; k < n; k = k + 1u) {
      let p = p_chunk[k];
      chunk_sum = chunk_sum + p;
      let off = kv_off[k];
      for (var i = 0u; i < DPIC; i = i + 1u) {
        let d = lid.x + i * WGC;
        if (d < d_head) { acc[i] = acc[i] + p * f32(v_cache[off + d]); }
      }
    }
    run_sum = run_sum * rescale + chunk_sum;
    run_max = new_max;
    // The next chunk overwrites the chunk arrays.
    workgroupBarrier();
  }

  // No visible key (a row the engine did not mean to attend) writes zeros, not 0/0.
  let inv = select(0.0, 1.0 / run_sum, run_sum > 0.0);
  let hidden = u.heads * d_head;
  for (var i = 0u; i < DPIC; i = i + 1u) {
    let d = lid.x + i * WGC;
    if (d < d_head) { out[t * hidden + h * d_head + d] = T(acc[i] * inv); }
  }
}
