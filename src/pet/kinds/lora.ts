import { gemmOf, type PetPacker } from '../packed-pet.js';
import type { LoraSite } from '../types.js';

/** LoRA: ΔY = s·(X·Aᵀ)·Bᵀ per site → a low-rank delta (segmented shrink + expand). */
export function packLora(sites: readonly LoraSite[], p: PetPacker): void {
  for (const s of sites) {
    const { gemm, colOffset } = gemmOf(s.site, p.hidden);
    const K = s.a.length / s.rank;
    const N = s.b.length / s.rank;
    p.packed.lowRank.push({
      layer: s.layer,
      gemm,
      colOffset,
      K,
      N,
      rank: s.rank,
      aOff: p.float(s.a),
      bOff: p.float(s.b),
      scale: s.scale,
    });
  }
}
