import { CheckpointError } from '../../../util/errors.js';

/**
 * Host-side position tables. Rotary frequencies are computed here (rope_scaling
 * included) so the GPU kernel only multiplies a position by a table entry;
 * ALiBi slopes likewise.
 */

export type RopeScaling =
  | { type: 'default' }
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

/** config.json `rope_scaling` (null, {type|rope_type: linear|llama3|default, ...}) → RopeScaling; others refused naming the key. */
export function parseRopeScaling(raw: unknown, source: string): RopeScaling {
  if (raw === null || raw === undefined) return { type: 'default' };
  if (typeof raw !== 'object') throw new CheckpointError(`${source}: rope_scaling must be an object or null`);
  const r = raw as Record<string, unknown>;
  const type = String(r['rope_type'] ?? r['type'] ?? 'default');
  const num = (key: string, fallback?: number): number => {
    const v = r[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new CheckpointError(`${source}: rope_scaling.${key} must be a positive number`);
    }
    return v;
  };
  switch (type) {
    case 'default':
      return { type: 'default' };
    case 'linear':
      return { type: 'linear', factor: num('factor') };
    case 'llama3':
      return {
        type: 'llama3',
        factor: num('factor'),
        lowFreqFactor: num('low_freq_factor'),
        highFreqFactor: num('high_freq_factor'),
        originalMaxPositions: num('original_max_position_embeddings'),
      };
    default:
      throw new CheckpointError(`${source}: rope_scaling type '${type}' is not supported (supported: default, linear, llama3)`);
  }
}

/**
 * Inverse frequencies of rotary embeddings, as transformers' rope init functions
 * compute them (modeling_rope_utils: default, linear, llama3): base frequencies
 * θ^(−2i/d), linear divides all by the factor, llama3 divides only the long
 * wavelengths and blends the band between low_freq_factor and high_freq_factor.
 */
export function rotaryInvFreq(rotaryDims: number, theta: number, scaling: RopeScaling): Float32Array {
  const half = rotaryDims / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    // transformers computes the exponent in f32; fround keeps the same rounding.
    const base = 1 / Math.pow(theta, Math.fround((2 * i) / rotaryDims));
    out[i] = scaleFrequency(base, scaling);
  }
  return out;
}

function scaleFrequency(freq: number, s: RopeScaling): number {
  if (s.type === 'default') return freq;
  if (s.type === 'linear') return freq / s.factor;
  const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor;
  const wavelen = (2 * Math.PI) / freq;
  if (wavelen < highFreqWavelen) return freq;
  if (wavelen > lowFreqWavelen) return freq / s.factor;
  const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
  return (1 - smooth) * (freq / s.factor) + smooth * freq;
}

/**
 * ALiBi slopes as BLOOM's build_alibi_tensor: the geometric sequence for the
 * closest power of two n ≤ heads, then every other slope of the sequence for 2n
 * for the remaining heads.
 */
export function alibiSlopes(heads: number): Float32Array {
  const closest = 2 ** Math.floor(Math.log2(heads));
  const base = 2 ** -(2 ** -(Math.log2(closest) - 3));
  const slopes: number[] = [];
  for (let i = 1; i <= closest; i++) slopes.push(base ** i);
  if (closest !== heads) {
    const extraBase = 2 ** -(2 ** -(Math.log2(2 * closest) - 3));
    const extra = Math.min(closest, heads - closest);
    for (let i = 0; i < extra; i++) slopes.push(extraBase ** (1 + 2 * i));
  }
  return Float32Array.from(slopes);
}
