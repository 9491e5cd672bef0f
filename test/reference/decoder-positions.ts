// Position encodings of the float64 decoder reference: rotary (Llama, Mistral,
// Qwen2) and ALiBi (BLOOM). Written from transformers' modeling_rope_utils and
// modeling_bloom, in float64 where transformers computes in float32.

export type RopeScaling =
  | { kind: 'none' }
  | { kind: 'linear'; factor: number }
  | {
      kind: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    };

/**
 * inv_freq[i] = θ^(−2i/d) for i < d/2 (_compute_default_rope_parameters), then
 * rescaled: 'linear' divides every frequency by the factor; 'llama3'
 * (_compute_llama3_parameters) divides only the low frequencies (wavelength above
 * original/low_freq_factor), keeps the high ones (wavelength below
 * original/high_freq_factor) and blends linearly in wavelength⁻¹ in between.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScaling): Float64Array {
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
    throw new Error(`ropeInvFreq: head dim ${headDim} must be a positive even integer`);
  }
  const half = headDim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / theta ** ((2 * i) / headDim);
  if (scaling.kind === 'linear') return invFreq.map((f) => f / scaling.factor);
  if (scaling.kind === 'llama3') {
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } = scaling;
    const lowFreqWavelen = originalMaxPositions / lowFreqFactor;
    const highFreqWavelen = originalMaxPositions / highFreqFactor;
    return invFreq.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowFreqWavelen) return f / factor;
      if (wavelen < highFreqWavelen) return f;
      const smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  return invFreq;
}

/**
 * Rotates one head vector in place for position `pos`: HF's
 * x·cos + rotate_half(x)·sin with cos/sin = cat(freqs, freqs), i.e. element i
 * pairs with element i + d/2 (not with its neighbour, as in the GPT-J layout).
 */
export function applyRope(x: Float64Array, offset: number, headDim: number, pos: number, invFreq: Float64Array): void {
  const half = headDim / 2;
  for (let i = 0; i < half; i++) {
    const angle = pos * invFreq[i]!;
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    const a = x[offset + i]!;
    const b = x[offset + half + i]!;
    x[offset + i] = a * cos - b * sin;
    x[offset + half + i] = b * cos + a * sin;
  }
}

/**
 * BLOOM's build_alibi_tensor slopes: for the largest power of two p ≤ n heads,
 * slope_k = (2^(−8/p))^k for k = 1..p; for the remaining n − p heads the odd
 * powers 1, 3, 5, … of 2^(−8/(2p)), interleaving the slopes a 2p-head model
 * would have had.
 */
export function alibiSlopes(numHeads: number): Float64Array {
  if (!Number.isInteger(numHeads) || numHeads < 1) throw new Error(`alibiSlopes: bad head count ${numHeads}`);
  const closestPowerOf2 = 2 ** Math.floor(Math.log2(numHeads));
  const base = 2 ** -(2 ** -(Math.log2(closestPowerOf2) - 3));
  const slopes: number[] = [];
  for (let k = 1; k <= closestPowerOf2; k++) slopes.push(base ** k);
  if (closestPowerOf2 !== numHeads) {
    const extraBase = 2 ** -(2 ** -(Math.log2(2 * closestPowerOf2) - 3));
    const remaining = Math.min(closestPowerOf2, numHeads - closestPowerOf2);
    for (let k = 1; k < 1 + 2 * remaining; k += 2) slopes.push(extraBase ** k);
  }
  return Float64Array.from(slopes);
}
