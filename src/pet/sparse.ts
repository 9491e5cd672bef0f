// Sparse index sets shared by the sparse kinds (diff, mask): flat indices
// row·in + col into a [out, in] weight, strictly increasing.

import type { Rng } from '../util/random.js';
import { MAX_SPARSE_DENSITY } from './validator.js';

/**
 * round(density·size) distinct flat indices (at least one), ascending.
 * Rejection sampling into a bitmap: at density ≤ 0.5 it needs under 1.4
 * draws per index, and walking the bitmap yields them sorted.
 */
export function randomIndexSet(rng: Rng, size: number, density: number): Int32Array {
  const count = Math.min(size, Math.max(1, Math.round(density * size)));
  const taken = new Uint8Array(size);
  for (let drawn = 0; drawn < count; ) {
    const i = rng.int(0, size);
    if (taken[i] === 0) {
      taken[i] = 1;
      drawn++;
    }
  }
  const out = new Int32Array(count);
  for (let i = 0, n = 0; i < size; i++) if (taken[i] === 1) out[n++] = i;
  return out;
}

/** init-pet's density option: a refusal, or null when absent or in range. */
export function checkDensity(density: number | undefined): string | null {
  if (density !== undefined && !(density > 0 && density <= MAX_SPARSE_DENSITY)) {
    return `density must be in (0, ${MAX_SPARSE_DENSITY}], got ${density}`;
  }
  return null;
}
