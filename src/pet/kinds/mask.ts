import { gemmOf, type PetPacker } from '../packed-pet.js';
import type { MaskSite } from '../types.js';

/** MaskBERT: Y = X·(W⊙M)ᵀ + b = shared op − X·(W⊙¬M)ᵀ; only the removed positions are stored. */
export function packMask(sites: readonly MaskSite[], p: PetPacker): void {
  for (const s of sites) {
    const { gemm, colOffset } = gemmOf(s.site, p.hidden);
    const info = p.gemmInfo(s.layer, gemm);
    const N = gemm === 'qkv' ? p.hidden : info.N;
    const { ptrOff, idxOff } = p.csr(s.removed, N, info.K);
    p.packed.sparse.push({ layer: s.layer, gemm, colOffset, K: info.K, N, ptrOff, idxOff, valOff: null });
  }
}
