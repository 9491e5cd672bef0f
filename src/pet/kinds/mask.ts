import type { PetPacker } from '../packed-pet.js';
import type { MaskSite } from '../types.js';

/** MaskBERT: Y = X·(W⊙M)ᵀ + b = shared op − X·(W⊙¬M)ᵀ; only the removed positions are stored. */
export function packMask(sites: readonly MaskSite[], p: PetPacker): void {
  for (const s of sites) {
    const { gemm, colOffset, N, K } = p.linearSite(s.layer, s.site);
    const { ptrOff, idxOff } = p.csr(s.removed, N, K);
    p.packed.sparse.push({ layer: s.layer, gemm, colOffset, K, N, ptrOff, idxOff, valOff: null, nnz: s.removed.length });
  }
}
